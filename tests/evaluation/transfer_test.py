"""The linear transfer protocol: the logistic regression against scikit-learn's solver and its
optimality conditions, the metrics by hand, and every dataset name on TFDS mock data."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from sklearn.linear_model import LogisticRegression

import simclr_tf  # noqa: F401
from simclr_tf.evaluation import logistic, transfer
from simclr_tf.evaluation import transfer_datasets as tds
from simclr_tf.models import simclr_model as model_lib
from simclr_tf.tools import visualize

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _problem(n=150, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.5, [k, d])
    y = rng.integers(0, k, n)
    return centres[y] + rng.normal(0, 1.0, [n, d]), y


@pytest.mark.parametrize("l2", [1e-3, 0.1])
def test_multinomial_fit_equals_scikit_learns(l2):
    x, y = _problem()
    ours = logistic.fit(x, y, l2, 3)
    # scikit-learn minimises C sum_i CE_i + |W|^2 / 2 (bias unpenalised): C = 1 / (n l2).
    ref = LogisticRegression(C=1.0 / (len(y) * l2), tol=1e-12, max_iter=10000).fit(x, y)
    np.testing.assert_allclose(ours.weights, ref.coef_.T, atol=2e-4, rtol=1e-3)
    # The softmax's weights are defined up to a constant per feature; sklearn's sum to zero
    # over classes, and so do ours (the penalty makes the minimiser unique).
    np.testing.assert_allclose(ours.bias - ours.bias.mean(), ref.intercept_ - ref.intercept_
                               .mean(), atol=2e-4)
    np.testing.assert_array_equal(ours.scores(x).argmax(1), ref.predict(x))


def test_multilabel_fit_equals_one_binary_regression_per_class():
    x, _ = _problem(n=120, seed=1)
    rng = np.random.default_rng(2)
    targets = (x[:, :3] + rng.normal(0, 1, [120, 3]) > 0).astype(np.int64)
    ours = logistic.fit(x, targets, 0.01, 3, multilabel=True)
    for k in range(3):
        ref = LogisticRegression(C=1.0 / (120 * 0.01), tol=1e-12, max_iter=10000)
        ref.fit(x, targets[:, k])
        np.testing.assert_allclose(ours.weights[:, k], ref.coef_[0], atol=2e-4, rtol=1e-3)
        assert ours.bias[k] == pytest.approx(ref.intercept_[0], abs=2e-4)


def test_the_solution_zeroes_the_gradient_and_a_stronger_penalty_shrinks_it():
    x, y = _problem(seed=3)
    weak, strong = logistic.fit(x, y, 1e-4, 3), logistic.fit(x, y, 1.0, 3)
    targets = np.eye(3)[y]
    for fitted, l2 in ((weak, 1e-4), (strong, 1.0)):
        _, grad = logistic._objective(fitted.params, x, targets, l2, False)
        assert np.abs(grad).max() < 1e-5
    assert np.linalg.norm(strong.weights) < 0.5 * np.linalg.norm(weak.weights)


def test_metrics_by_hand():
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]])
    labels = np.array([0, 0, 0, 1, 1])
    assert logistic.top1_accuracy(scores, labels) == pytest.approx(4 / 5)
    assert logistic.mean_per_class_accuracy(scores, labels) == pytest.approx((2 / 3 + 1) / 2)
    # Ranked hits 1, 0, 1, 0: precision 1 up to recall 0.5, 2/3 up to recall 1.
    ap = (6 * 1.0 + 5 * (2 / 3)) / 11
    one = np.array([0.9, 0.8, 0.7, 0.6])
    assert logistic.average_precision_11(one, np.array([1, 0, 1, 0])) == pytest.approx(ap)
    # An ignored ("difficult") image changes nothing, wherever it ranks.
    with_ignored = logistic.average_precision_11(np.array([0.95, 0.9, 0.8, 0.7, 0.6]),
                                                 np.array([-1, 1, 0, 1, 0]))
    assert with_ignored == pytest.approx(ap)
    two = logistic.voc_map_11(np.stack([one, one[::-1]], 1),
                              np.array([[1, 0], [0, 0], [1, 0], [0, 1]]))
    assert two == pytest.approx((ap + 1.0) / 2)


def test_choosing_the_strength_on_validation_prefers_the_fitting_one():
    x, y = _problem(n=300, d=20, seed=4)
    train, val = (x[:200], y[:200]), (x[200:], y[200:])
    grid = logistic.l2_grid(7)
    assert grid[0] == pytest.approx(1e5) and grid[-1] == pytest.approx(1e-6)
    best, scored = logistic.choose_l2(train, val, grid, 3, "top1")
    assert scored[best] == max(scored.values()) and len(scored) == 7
    assert scored[1e5] < scored[best]  # the strongest penalty predicts one class


def test_hold_out_is_seeded_disjoint_and_per_class():
    labels = np.repeat([0, 1, 2], [50, 20, 10])
    keep, held = tds.hold_out(labels, seed=1)
    assert not set(keep) & set(held) and len(keep) + len(held) == 80
    assert [int(np.sum(labels[held] == c)) for c in range(3)] == [10, 4, 2]
    np.testing.assert_array_equal(held, tds.hold_out(labels, seed=1)[1])
    assert not np.array_equal(held, tds.hold_out(labels, seed=2)[1])
    # Classes of one or two images: 20% of all of them instead.
    keep, held = tds.hold_out(np.arange(10), seed=0)
    assert len(held) == 2 and len(keep) == 8 and not set(keep) & set(held)
    multi = np.eye(4, dtype=np.int64)[np.arange(20) % 4]
    assert len(tds.hold_out(multi, seed=0)[1]) == 4


def test_names_and_the_datasets_not_in_tfds():
    assert tds.lookup("voc/2007") is tds.DATASETS["voc2007"]
    with pytest.raises(ValueError, match="'birdsnap'.*not in TFDS"):
        tds.lookup("birdsnap")
    with pytest.raises(ValueError, match="unknown transfer dataset 'imagenet'.*cifar10"):
        tds.lookup("imagenet")


def _ap_11_in_order(targets):
    """VOC's 11-point AP of one class whose every image scores the same: the images ranked
    in the order read (as a stable sort ranks ties); ``targets`` 1, 0 or -1 (ignored)."""
    hits = targets[targets >= 0] == 1
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    recall = np.cumsum(hits) / hits.sum()
    return np.mean([max(precision[recall >= t], default=0.0) for t in np.linspace(0, 1, 11)])


def _bias_only_scores(spec):
    """(test score, the validation scores it can have), in %, of a classifier that sees
    features of zeros, on TFDS's mock data, from the labels as TFDS reads them.

    With zero features no weight changes a score: the fitted classifier is its (unpenalised)
    bias, the same for every image, whatever the strength. Multi-class, it predicts a class
    most frequent in its training data. The mock holds the same 24 examples in every split,
    so the test split is the training data (train + validation) itself: top-1 is that
    class's count / 24 and the mean per-class accuracy 1 / the number of classes present,
    whichever of equally frequent classes wins. Multi-label (VOC), a class scores every image
    the same: its AP is that of the images in the order read."""
    def read(split):
        return list(tfds.as_numpy(tfds.load(spec.tfds_name, split=split)))

    test = read(spec.test)
    if spec.multilabel:
        classes = tds.num_classes(spec, None)
        targets = np.zeros([len(test), classes])
        for i, ex in enumerate(test):
            targets[i, ex["labels"]] = -1  # present only as "difficult": ignored
            targets[i, ex["labels_no_difficult"]] = 1
        aps = [_ap_11_in_order(targets[:, k]) for k in range(classes) if (targets[:, k] == 1).any()]
        return 100 * np.mean(aps), {100 * np.mean(aps)}
    labels = np.array([ex["label"] for ex in test])
    counts = np.bincount(labels)

    def score(predicted, truth):
        hits = truth == predicted
        if spec.metric == "top1":
            return 100 * hits.mean()
        return 100 * np.mean([hits[truth == c].mean() for c in np.unique(truth)])

    test_score = score(np.argmax(counts), labels)
    if spec.validation:  # the validation split is the test split too
        return test_score, {test_score}
    keep, held = tds.hold_out(labels, 0)  # the validation carved from the training split
    fitted = np.bincount(labels[keep])
    return test_score, {score(c, labels[held]) for c in np.flatnonzero(fitted == fitted.max())}


def test_every_dataset_on_mock_data_writes_the_table(tmp_path, tiny):
    # The tiny encoder's features times 0: every dataset's images still go through it, and
    # each score is known (_bias_only_scores).
    model = model_lib.from_config(tiny(tmp_path, train_mode="finetune"), None)
    encoder = visualize.model_features(model)
    options = transfer.Options(image_size=16, batch_size=16, grid_size=3, seed=0)
    with tfds.testing.mock_data(num_examples=24):
        results = transfer.run(list(tds.DATASETS), lambda images: 0.0 * encoder(images),
                               options, str(tmp_path / "out"), "ResNet-18 (0.25x)",
                               "a tiny random encoder")
        expected = {name: _bias_only_scores(spec) for name, spec in tds.DATASETS.items()}
    assert [r["dataset"] for r in results] == list(tds.DATASETS)
    for r in results:
        spec = tds.DATASETS[r["dataset"]]
        score, validation_scores = expected[r["dataset"]]
        assert r["metric"] == spec.metric
        assert r["score"] == pytest.approx(score, abs=1e-9), r
        assert any(r["validation_score"] == pytest.approx(v, abs=1e-9)
                   for v in validation_scores), (r, validation_scores)
        if spec.validation:  # every strength scores the same: the strongest is chosen
            assert r["l2"] == 1e5, r
        assert r["train_examples"] + r["validation_examples"] == (24 if spec.validation is None
                                                                  else 48)
        assert r["test_examples"] == 24 and r["feature_dim"] == 128
    saved = json.loads((tmp_path / "out" / "transfer.json").read_text())
    assert saved["results"] == results
    md = (tmp_path / "out" / "transfer.md").read_text()
    assert "| cifar10 | top1 |" in md and "(95.3)" in md and "is not that one" in md


def test_the_program_on_mock_data(tmp_path, tiny):
    export = tmp_path / "export"
    from simclr_tf.runs import export as export_lib
    export_lib.export_model(model_lib.from_config(tiny(tmp_path), None), str(export))
    code = ("import sys, tensorflow_datasets as tfds\n"
            "from simclr_tf.cli import transfer\n"
            "with tfds.testing.mock_data(num_examples=20):\n"
            "    transfer.run()\n")
    args = [f"--hub_module={export}", "--datasets=dtd,oxford_iiit_pet", "--image_size=16",
            f"--output_dir={tmp_path / 'out'}", "--transfer_grid_size=2"]
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "transfer: dtd: top1" in proc.stdout and "transfer: oxford_iiit_pet: " \
        "mean_per_class" in proc.stdout
    results = json.loads((tmp_path / "out" / "transfer.json").read_text())["results"]
    assert [r["dataset"] for r in results] == ["dtd", "oxford_iiit_pet"]
    bad = subprocess.run([sys.executable, "-m", "simclr_tf.cli.transfer", *args[:1],
                          "--datasets=birdsnap", f"--output_dir={tmp_path}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "'birdsnap'" in bad.stderr and "not in TFDS" in bad.stderr
