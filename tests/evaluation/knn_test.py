"""The kNN monitor: the vote against a NumPy kNN written from its definition, the monitor over
one and two replicas (padded last batches included) against the same on fixed features, and
a pretraining run whose reported knn_top1 is recomputed from its final weights."""

import numpy as np
import pytest
import tensorflow as tf

from simclr_tf.core import endpoints as ep
from simclr_tf.data import pipeline as data_lib
from simclr_tf.data import sources
from simclr_tf.evaluation import knn
from simclr_tf.tools import visualize
from simclr_tf.training import train


def numpy_knn_predict(queries, bank, bank_labels, num_classes, k, temperature):
    """Weighted kNN from its definition, one query at a time: the k most similar bank rows
    (cosine) each add exp(similarity / temperature) to their class; the largest sum wins."""
    def unit(x):
        x = x.reshape(len(x), -1)
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    queries, bank = unit(np.asarray(queries, np.float64)), unit(np.asarray(bank, np.float64))
    scores = np.zeros([len(queries), num_classes])
    for i, q in enumerate(queries):
        similarity = bank @ q
        for j in np.argsort(-similarity)[:k]:
            scores[i, bank_labels[j]] += np.exp(similarity[j] / temperature)
    return scores


def _unit(x):
    return tf.math.l2_normalize(tf.constant(x, tf.float32), axis=-1)


@pytest.mark.parametrize("k", [5, 1, 80])  # 80 > the bank: every row votes
def test_scores_equal_the_definition(k):
    rng = np.random.default_rng(k)
    queries, bank = rng.normal(size=[7, 6]), rng.normal(size=[50, 6])
    labels = rng.integers(0, 4, size=50)
    got = knn.weighted_knn_scores(_unit(queries), _unit(bank), tf.constant(labels), 4, k, 0.1)
    want = numpy_knn_predict(queries, bank, labels, 4, k, 0.1)
    np.testing.assert_allclose(got.numpy(), want, rtol=2e-4)
    if k == 1:  # one neighbour: its class alone, with weight exp(s / t)
        assert (np.count_nonzero(want, axis=1) == 1).all()


def test_bank_split_is_a_seeded_subset_of_an_in_memory_source():
    # Image i is filled with the value i: a bank's images tell which examples it kept.
    labels = np.arange(30) % 3
    images = np.repeat(np.arange(30, dtype=np.uint8), 4 * 4 * 3).reshape([30, 4, 4, 3])
    source = sources.ArraySource({"train": (images, labels)}, 3)

    def kept(seed):
        sub, split = knn.bank_split(source, "train", 12, seed)
        assert split == "train"
        bank_images, bank_labels = sub.arrays(split)
        index = bank_images[:, 0, 0, 0].astype(np.int64)
        np.testing.assert_array_equal(bank_labels, labels[index])  # each with its own label
        return index

    banks = {seed: kept(seed) for seed in range(20)}
    for seed, index in banks.items():
        assert len(set(index)) == len(index) == 12, (seed, index)  # 12 examples, no repeat
    np.testing.assert_array_equal(kept(5), banks[5])  # a seed gives the same bank again
    assert len({tuple(sorted(index)) for index in banks.values()}) == 20  # another per seed
    # A random subset of all 30: over the 20 banks every example is drawn at least once (a
    # prefix, or a draw that misses an end, would leave some out; a miss of any of them by
    # 20 fair draws of 12 has a chance of 30 x 0.6^20 = 0.1%, and these draws are seeded).
    assert set(np.concatenate(list(banks.values()))) == set(range(30))
    assert knn.bank_split(source, "train", 0, 5)[0] is source  # 0: the whole split
    assert knn.bank_split(source, "train", 30, 5)[0] is source


class _FlatFeatures(tf.Module):
    """A stand-in encoder whose features are the centred pixels: known without TF."""

    def __call__(self, images, training=None):
        assert training is False
        return {ep.FINAL_AVG_POOL: tf.reshape(images - 0.5, [tf.shape(images)[0], -1])}


def _prototype_images(n, seed, num_classes=3, size=4):
    """Images near one of ``num_classes`` random prototypes (the label), with noise."""
    rng = np.random.default_rng(seed)
    prototypes = np.random.default_rng(0).uniform(40, 215, [num_classes, size, size, 3])
    labels = rng.integers(0, num_classes, n)
    images = prototypes[labels] + rng.normal(0, 160, [n, size, size, 3])
    return np.clip(images, 0, 255).astype(np.uint8), labels


@pytest.mark.parametrize("replicas", ["one_replica", "two_replicas"])
def test_monitor_equals_numpy_knn_on_fixed_features(replicas, request):
    strategy = request.getfixturevalue(replicas)
    bank_images, bank_labels = _prototype_images(37, seed=1)  # 37, 21: last batches partial
    query_images, query_labels = _prototype_images(21, seed=2)
    source = sources.ArraySource({"train": (bank_images, bank_labels),
                                  "test": (query_images, query_labels)}, 3)

    def distributed(split):
        return strategy.distribute_datasets_from_function(
            lambda ctx: data_lib.build_dataset(source, split, "eval", 8, 4, ctx))
    monitor = knn.KnnMonitor(strategy, _FlatFeatures(), distributed("train"),
                             distributed("test"), 3, batch_size=8, k=5, temperature=0.1)
    result = monitor.evaluate(tf.constant(-1))
    scores = numpy_knn_predict(query_images / 255.0 - 0.5, bank_images / 255.0 - 0.5,
                               bank_labels, 3, 5, 0.1)
    want = np.mean(scores.argmax(1) == query_labels)
    assert (monitor.bank_size, monitor.queries) == (37, 21)
    assert result["knn_top1"] == pytest.approx(want, abs=1e-9)
    assert 0.4 < want < 1.0  # above chance (1/3) and not trivially perfect
    # num_steps limits the queries: two batches of 8.
    assert monitor.evaluate(tf.constant(2)) and monitor.queries == 16


def test_pretraining_reports_the_knn_top1_of_its_weights(tiny, tmp_path, capsys):
    """Without the probe (the monitor alone evaluates): the figure in summary.json, in
    TensorBoard at each checkpoint and on the eval line is the kNN of the final weights."""
    cfg = tiny(tmp_path / "run", knn_monitor=True, knn_bank_size=120, knn_k=20,
               matmul_small_convs=False, calibrate_kernels=False,  # eager = traced kernels
               lineareval_while_pretraining=False, eval_steps=2)
    kept = {}
    summary = train.run(cfg, on_end=lambda model: kept.update(model=model))
    assert "top1" not in summary
    written = visualize.read_scalars(str(tmp_path / "run"))["eval/knn_top1"]
    assert set(written) == {0, 2, 4} and written[4] == pytest.approx(summary["knn_top1"])
    assert f"eval at step 4 | knn_top1 {summary['knn_top1']:.3f}" in capsys.readouterr().out

    source = data_lib.get_source(cfg.dataset, seed=cfg.seed)
    bank_source, split = knn.bank_split(source, cfg.train_split, 120, cfg.seed)

    def features(src, split, limit):
        images, labels = zip(*list(data_lib.build_dataset(src, split, "eval", 50, 16))[:limit])
        model = kept["model"]
        return (np.concatenate([model(i, training=False)[ep.FINAL_AVG_POOL].numpy()
                                for i in images]), np.concatenate(labels))
    bank, bank_labels = features(bank_source, split, 3)
    queries, query_labels = features(source, cfg.eval_split, 2)
    assert len(bank) == 120 and len(queries) == 100
    scores = numpy_knn_predict(queries, bank, bank_labels, source.info.num_classes, 20, 0.1)
    assert summary["knn_top1"] == pytest.approx(np.mean(scores.argmax(1) == query_labels),
                                                abs=1e-9)
