"""--embedding_chunks: the chunked step's loss, gradients and update against the one-pass
step's, on one replica and on two, with and without batch norm; its memory against K."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import simclr_tf  # noqa: F401
from simclr_tf.core import endpoints as ep
from simclr_tf.core.config import Config
from simclr_tf.models import simclr_model as model_lib
from simclr_tf.training import chunked_step, optim
from simclr_tf.training import step as step_lib

BATCH = 8
DENSE = Config(model_dir="/unused", dataset="shapes", image_size=4, train_batch_size=BATCH,
               temperature=0.5, weight_decay=1e-3, use_blur=False, seed=3,
               lineareval_while_pretraining=True, strategy="default",
               calibrate_kernels=False)  # the fixed kernels: numerics compared


class _DenseModel(keras.Model):
    """A SimCLR model without batch norm: the two views on channels, a dense encoder, a
    two-layer head and a probe on the stopped encoder output (the endpoints the step reads)."""

    def __init__(self, dtype="float32"):
        super().__init__()
        self.encoder = keras.layers.Dense(12, activation="relu", dtype=dtype)
        self.hidden = keras.layers.Dense(10, activation="relu", dtype=dtype)
        self.out = keras.layers.Dense(6, dtype=dtype)
        self.probe = keras.layers.Dense(10, dtype=dtype)

    def call(self, images, training=None):
        views = model_lib.split_views(images)
        h = self.encoder(tf.reshape(views, [tf.shape(views)[0], -1]))
        return {ep.PROJ_HEAD_OUTPUT: self.out(self.hidden(h)),
                ep.LOGITS_SUP: self.probe(tf.stop_gradient(h))}


def _inputs(size):
    images = tf.random.stateless_uniform([BATCH, size, size, 6], seed=[4, 5])
    return images, tf.constant([0, 1, 2, 3, 4, 5, 6, 7], tf.int32)


def _dense_weights():
    keras.utils.set_random_seed(7)
    model = _DenseModel()
    model(tf.zeros([1, 4, 4, 6]))
    return model.get_weights()


def _step(cfg, strategy, build, weights):
    """(one step on the fixed batch in a tf.function: (loss, metrics), the model)."""
    with strategy.scope():
        model = build()
        model(tf.zeros([strategy.num_replicas_in_sync, cfg.image_size, cfg.image_size, 6]))
        model.set_weights(weights)
        optimizer = optim.make_optimizer(cfg, 0.5)
    replica_step = step_lib.make_replica_step(model, optimizer, cfg,
                                              strategy.num_replicas_in_sync)
    dist = step_lib.split_batch(strategy, _inputs(cfg.image_size))
    loss, metrics = tf.function(lambda x: step_lib.run_step(strategy, replica_step, x))(dist)
    return (float(loss), {k: float(v) for k, v in metrics.items()}), model


def _assert_close_updates(after, reference, before, rel):
    for a, b, w0 in zip(after, reference, before):
        diff = np.linalg.norm((a - w0) - (b - w0))
        assert diff <= rel * np.linalg.norm(b - w0) + 1e-8, (diff, np.linalg.norm(b - w0))


def test_merge_puts_every_chunks_first_views_before_their_second_views():
    # Chunk c holds [view 1 of its images; view 2 of its images]; the whole batch is
    # [view 1 of all images; view 2 of all images], images in order.
    chunks = [np.array([[10 * c + i] for i in range(4)], np.float32) for c in range(2)]
    whole = chunked_step.merge([tf.constant(c) for c in chunks]).numpy().ravel().tolist()
    assert whole == [0, 1, 10, 11, 2, 3, 12, 13]
    back = chunked_step.unmerge(tf.constant(whole)[:, None], 2)
    assert [b.numpy().ravel().tolist() for b in back] == [[0, 1, 2, 3], [10, 11, 12, 13]]


def test_chunked_gradients_equal_one_pass_gradients_without_batch_norm():
    model = _DenseModel()
    model(tf.zeros([1, 4, 4, 6]))
    model.set_weights(_dense_weights())
    images, labels = _inputs(4)
    variables = model.trainable_variables

    def loss_fn(outputs):
        return step_lib.compute_losses(outputs, labels, DENSE)

    with tf.GradientTape() as tape:
        loss, metrics = loss_fn(model(images, training=True))
    expected = tape.gradient(loss, variables)
    for chunks in (1, 2, 4, 8):
        got_loss, got_metrics, grads = chunked_step.gradients(
            model, images, variables, chunks, loss_fn, lambda x: x)
        assert float(got_loss) == pytest.approx(float(loss), rel=1e-6), chunks
        for key in ("contrast_acc", "contrast_entropy", "supervised_loss"):
            assert float(got_metrics[key]) == pytest.approx(float(metrics[key]), rel=1e-6)
        for g, e in zip(grads, expected):
            # measured: at most 3e-7 of the gradient's norm (sums in another order)
            assert np.linalg.norm(g - e) <= 1e-5 * np.linalg.norm(e), chunks


@pytest.mark.parametrize("optimizer", ["lars", "momentum"])
def test_chunked_steps_update_the_weights_as_the_one_pass_step(one_replica, two_replicas,
                                                               optimizer):
    weights = _dense_weights()
    cfg = dataclasses.replace(DENSE, optimizer=optimizer)
    (loss, logs), ref = _step(cfg, one_replica, _DenseModel, weights)
    cases = [(one_replica, 2), (one_replica, 4), (two_replicas, 1), (two_replicas, 2),
             (two_replicas, 4)]
    for strategy, chunks in cases:
        chunked = dataclasses.replace(cfg, embedding_chunks=chunks)
        (got_loss, got_logs), model = _step(chunked, strategy, _DenseModel, weights)
        where = (strategy.num_replicas_in_sync, chunks)
        assert got_loss == pytest.approx(loss, rel=1e-5), where
        for key in ("contrast_loss", "contrast_acc", "supervised_loss", "weight_decay"):
            assert got_logs[key] == pytest.approx(logs[key], rel=1e-5, abs=1e-7), (where, key)
        # measured: within 1.1e-6 on oneDNN's kernels, 1.5e-5 on TF's Eigen kernels (float32
        # sums in another order); a chunk's gradient lost or counted twice is > 1e-1
        _assert_close_updates(model.get_weights(), ref.get_weights(), weights, rel=5e-5)
    assert logs["weight_decay"] > 0 or optimizer == "lars"  # LARS decays inside its update


@pytest.mark.parametrize("settings,dtype,rel", [
    ({"jit_compile": True}, "float32", 1e-5),
    ({"precision": "mixed_float16"}, "mixed_float16", 4e-3)])  # loss scaling on
def test_chunked_step_under_xla_and_under_float16_loss_scaling(one_replica, settings, dtype,
                                                                rel):
    weights = _dense_weights()
    cfg = dataclasses.replace(DENSE, optimizer="momentum", **settings)
    build = lambda: _DenseModel(dtype)  # noqa: E731
    (loss, logs), ref = _step(cfg, one_replica, build, weights)
    chunked = dataclasses.replace(cfg, embedding_chunks=4)
    (got_loss, got_logs), model = _step(chunked, one_replica, build, weights)
    assert got_loss == pytest.approx(loss, rel=rel)
    assert got_logs["contrast_acc"] == pytest.approx(logs["contrast_acc"], rel=rel)
    _assert_close_updates(model.get_weights(), ref.get_weights(), weights, rel=rel)
    assert not all(np.allclose(a, b) for a, b in zip(model.get_weights(), weights))


def _resnet_cfg(**kw):
    settings = dict(model_dir="/unused", dataset="shapes", image_size=16, resnet_depth=18,
                    width_multiplier=0.25, num_proj_layers=2, proj_out_dim=16,
                    train_batch_size=BATCH, temperature=0.5, weight_decay=1e-4,
                    global_bn=False, use_blur=False, seed=3, lineareval_while_pretraining=True,
                    strategy="default")
    return Config(**{**settings, **kw})


def test_chunks_normalise_as_replicas_without_global_bn(one_replica, two_replicas):
    # K chunks on one device = K replicas without --global_bn, each normalising its share,
    # negatives from the whole batch, gradients summed.
    cfg = _resnet_cfg()
    keras.utils.set_random_seed(11)
    weights = model_lib.from_config(cfg, 10).get_weights()
    build = lambda: model_lib.from_config(cfg, 10)  # noqa: E731
    (loss2, logs2), replicas = _step(cfg, two_replicas, build, weights)
    chunked = dataclasses.replace(cfg, embedding_chunks=2)
    (loss_k, logs_k), model = _step(chunked, one_replica, build, weights)
    assert loss_k == pytest.approx(loss2, rel=1e-5)
    for key in ("contrast_loss", "contrast_acc", "contrast_entropy", "supervised_loss"):
        assert logs_k[key] == pytest.approx(logs2[key], rel=1e-5, abs=1e-6), key
    trainable = [i for i, v in enumerate(model.weights) if v.trainable]
    _assert_close_updates([model.get_weights()[i] for i in trainable],
                          [replicas.get_weights()[i] for i in trainable],
                          [weights[i] for i in trainable], rel=1e-4)  # measured: 1e-5
    # The moving statistics took one update per chunk (not two: the first pass's are undone).
    reference = build()
    reference.set_weights(weights)
    images, _ = _inputs(16)
    for piece in tf.split(images, 2):
        reference(piece, training=True)
    got = [v.numpy() for v in chunked_step.moving_statistics(model)]
    want = [v.numpy() for v in chunked_step.moving_statistics(reference)]
    assert len(got) > 20
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_peak_memory_of_the_step_falls_with_the_chunks():
    from simclr_tf.bench import loss_scaling  # noqa: PLC0415

    peaks = {}
    for chunks in (1, 2, 4):
        cfg = _resnet_cfg(embedding_chunks=chunks, train_batch_size=64)
        model = model_lib.from_config(cfg, None)
        optimizer = optim.make_optimizer(cfg, 0.5)
        replica_step = tf.function(step_lib.make_replica_step(model, optimizer, cfg, 1))
        images = tf.random.stateless_uniform([64, 16, 16, 6], seed=[1, 2])
        inputs = (images, tf.zeros([64], tf.int32))
        replica_step(inputs)  # traced and warm: the peak below is the step's own
        peaks[chunks] = loss_scaling.peak_mib(lambda: replica_step(inputs)[0].numpy())
    assert peaks[1] > peaks[2] > peaks[4] > 0, peaks
    assert peaks[4] < 0.6 * peaks[1], peaks  # activations dominate: close to 1/K of them


def test_bad_chunk_counts_are_refused_with_what_would_do():
    with pytest.raises(ValueError, match=r"--embedding_chunks=3 does not divide a replica's 8 "
                                         r"images.*e\.g\. 2"):
        chunked_step.check_chunks_divide(8, 3)
    with pytest.raises(ValueError, match="--embedding_chunks=0 must be >= 1"):
        dataclasses.replace(DENSE, embedding_chunks=0).validate()
    with pytest.raises(ValueError, match="--embedding_chunks=2 is for pretraining"):
        dataclasses.replace(DENSE, embedding_chunks=2, train_mode="finetune").validate()
