"""The pretraining step on 1 and 2 replicas, XLA, and mixed precision, on fixed inputs."""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import simclr_tf  # noqa: F401
from simclr_tf.core import endpoints as ep
from simclr_tf.core.config import Config
from simclr_tf.models import simclr_model as model_lib
from simclr_tf.training import losses, optim, train
from simclr_tf.training import step as step_lib

# The kernels are the fixed choice (calibrate_kernels=False), the same in eager and traced
# steps; measured ones would rest on timings taken under the suite's load.
BASE = Config(model_dir="/unused", dataset="shapes", image_size=16, resnet_depth=18,
              width_multiplier=0.25, num_proj_layers=2, proj_out_dim=16, train_batch_size=8,
              temperature=0.5, weight_decay=1e-4, global_bn=True, use_blur=True, seed=3,
              lineareval_while_pretraining=True, strategy="default", calibrate_kernels=False)
BATCH = 8


def _inputs(size=16):
    images = tf.random.stateless_uniform([BATCH, size, size, 6], seed=[1, 2])
    labels = tf.constant([0, 1, 2, 3, 4, 5, 6, 7], tf.int32)
    return images, labels


def _num_classes(cfg):
    return 10 if cfg.lineareval_while_pretraining else None


def _reference_weights(cfg):
    keras.utils.set_random_seed(11)
    return model_lib.from_config(cfg, _num_classes(cfg)).get_weights()


def _assert_same_updates(after_a, after_b, before, rel):
    """Per variable, |update_a - update_b| <= rel |update_b| (+ a floor for ~0 updates).

    A norm per variable, not per element: an element whose update happens to be near zero
    carries only rounding noise, which an elementwise relative tolerance would flag."""
    for a, b, w0 in zip(after_a, after_b, before):
        diff = np.linalg.norm((a - w0) - (b - w0))
        assert diff <= rel * np.linalg.norm(b - w0) + 1e-7, (diff, np.linalg.norm(b - w0))


class _Step:
    """The package's replica step (``step.make_replica_step``) on a model set to ``weights``."""

    def __init__(self, cfg, strategy, weights, sync_bn=None):
        with strategy.scope():
            self.model = model_lib.from_config(cfg, _num_classes(cfg), strategy, sync_bn=sync_bn)
            optimizer = optim.make_optimizer(cfg, 0.4)
        self.model.set_weights(weights)
        self.cfg, self.strategy = cfg, strategy
        self.replica_step = step_lib.make_replica_step(self.model, optimizer, cfg,
                                                       strategy.num_replicas_in_sync)


def _one_step(step, strategy, jit=False):
    """One step on the fixed batch: (loss, metrics averaged over replicas, weights after)."""
    images, labels = _inputs(step.cfg.image_size)
    dist = step_lib.split_batch(strategy, (images, labels))

    def run(x):
        return step_lib.run_step(strategy, step.replica_step, x)

    if jit:  # else eagerly: the same ops, without the cost of tracing two replicas
        run = tf.function(run, jit_compile=True)

    loss, metrics = run(dist)
    logs = {k: float(v) for k, v in metrics.items()}
    return float(loss), logs, [w.copy() for w in step.model.get_weights()]


def test_two_replicas_with_global_bn_equal_one_replica(one_replica, two_replicas):
    # One replica would get the fused batch norm (resnet_test compares it with this one);
    # here both sides use the synchronised layer, to test the cross-replica logic alone.
    cfg = dataclasses.replace(BASE, image_size=32)  # 32 px: a 3x3 blur kernel (16 px: 1x1)
    weights = _reference_weights(cfg)
    results = [_one_step(_Step(cfg, s, weights, sync_bn=True), s)
               for s in (one_replica, two_replicas)]
    (loss1, logs1, w1), (loss2, logs2, w2) = results
    assert loss1 == pytest.approx(loss2, rel=1e-5)
    for key in ("contrast_loss", "contrast_acc", "supervised_loss"):
        assert logs1[key] == pytest.approx(logs2[key], rel=1e-5, abs=1e-6), key
    # Compare the updates themselves (they are small next to the weights).
    _assert_same_updates(w2, w1, weights, rel=1e-3)
    moved = sum(not np.allclose(a, w0) for a, w0 in zip(w1, weights))
    assert moved > len(weights) // 2  # the step changed most variables (BN statistics too)


def test_two_replicas_without_global_bn_normalise_each_half(two_replicas):
    cfg = dataclasses.replace(BASE, global_bn=False, use_blur=False,
                              lineareval_while_pretraining=False)
    weights = _reference_weights(cfg)
    trainer = _Step(cfg, two_replicas, weights)
    _, logs, _ = _one_step(trainer, two_replicas)
    # Reference on one device: batch norm over each replica's half, negatives from both.
    model = model_lib.from_config(cfg, None)
    model.set_weights(weights)
    images, _ = _inputs()
    halves = [model(images[:4], training=True)[ep.PROJ_HEAD_OUTPUT],
              model(images[4:], training=True)[ep.PROJ_HEAD_OUTPUT]]
    z1 = tf.concat([h[:4] for h in halves], 0)
    z2 = tf.concat([h[4:] for h in halves], 0)
    expected = float(losses.nt_xent(z1, z2, cfg.temperature)[0])
    assert logs["contrast_loss"] == pytest.approx(expected, rel=1e-5)
    # ... which is not what global batch norm computes.
    whole = model(images, training=True)[ep.PROJ_HEAD_OUTPUT]
    global_loss = float(losses.nt_xent(whole[:8], whole[8:], cfg.temperature)[0])
    assert abs(global_loss - expected) > 1e-4


def test_step_compiles_with_xla_on_one_replica(one_replica, kernels):
    # XLA compiles the traced step with the pinned kernels (TF's, or the matmul convolutions
    # and the batch norm on sums); the eager step, which a chooser leaves to TF's kernels, is
    # the reference.
    cfg = dataclasses.replace(BASE, global_bn=False, **kernels.overrides)
    weights = _reference_weights(cfg)
    eager_loss, _, eager_w = _one_step(_Step(cfg, one_replica, weights), one_replica)
    assert kernels.chooser.asked == []  # eager: TF's kernels, nothing asked
    xla_loss, _, xla_w = _one_step(_Step(cfg, one_replica, weights), one_replica, jit=True)
    assert len(kernels.chooser.asked) > 20  # the traced step asked for every candidate
    assert xla_loss == pytest.approx(eager_loss, rel=1e-4)
    _assert_same_updates(xla_w, eager_w, weights, rel=5e-3)


def _relative(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _features_and_gradients(cfg, weights):
    """The model of ``cfg`` set to ``weights`` on the fixed batch in training mode: its
    outputs (as float32), the step's loss of them (``step.compute_losses``), the model's
    outputs themselves and the loss's gradients (float32, as the optimizer gets them)."""
    model = model_lib.from_config(cfg, _num_classes(cfg))
    model.set_weights(weights)
    images, labels = _inputs()
    with tf.GradientTape() as tape:
        outputs = model(images, training=True)
        loss, _ = step_lib.compute_losses(outputs, labels, cfg)
    grads = tape.gradient(loss, model.trainable_variables)
    as_float32 = {k: tf.cast(v, tf.float32).numpy() for k, v in outputs.items()}
    return model, as_float32, loss, outputs, [g.numpy() for g in grads]


# Measured on this machine against float32 with the same weights and batch (the relative
# norm of the difference): bfloat16 (8 bits of mantissa) 0.9% on the features, 2.2% on the
# projections, 1.3% on the probe's logits and 9.9% on all the gradients together; float16
# (11 bits) 0.11%, 0.29%, 0.15% and 1.3%. The bounds are about three times the worst
# measured; the floors, ten times below the least, say the outputs did go through the lower
# precision (float32 against itself: no difference, the same kernels on the same batch).
@pytest.mark.parametrize("precision,features_within,gradients_within,floor", [
    ("mixed_bfloat16", 0.08, 0.3, 1e-3), ("mixed_float16", 0.01, 0.04, 1e-4)])
def test_mixed_precision_features_and_gradients_agree_with_float32(
        precision, features_within, gradients_within, floor):
    cfg = dataclasses.replace(BASE, global_bn=False)
    weights = _reference_weights(cfg)
    _, want, _, _, want_grads = _features_and_gradients(cfg, weights)
    mixed = dataclasses.replace(cfg, precision=precision)
    model, got, loss, outputs, grads = _features_and_gradients(mixed, weights)
    conv = model.encoder.stem.conv.conv
    assert conv.compute_dtype == precision.split("_")[1] and conv.kernel.dtype == tf.float32
    for name in (ep.FINAL_AVG_POOL, ep.PROJ_HEAD_OUTPUT, ep.LOGITS_SUP):
        assert outputs[name].dtype == precision.split("_")[1], name
        diff = _relative(got[name], want[name])
        assert floor < diff <= features_within, (name, diff)
    # The loss is float32 arithmetic on the lower-precision outputs: the same value as on
    # their float32 copies, to float32's rounding (in bfloat16 it would be ~1e-3 off).
    loss_of_copies, _ = step_lib.compute_losses(
        {k: tf.constant(v) for k, v in got.items()}, _inputs()[1], mixed)
    assert loss.dtype == tf.float32
    assert float(loss) == pytest.approx(float(loss_of_copies), rel=1e-6)
    assert all(g.dtype == np.float32 and np.all(np.isfinite(g)) for g in grads)
    total = np.sqrt(sum(np.sum((g - w) ** 2) for g, w in zip(grads, want_grads)))
    assert total <= gradients_within * np.sqrt(sum(np.sum(w ** 2) for w in want_grads))


def test_mixed_precision_program_runs_and_exports_float32(tmp_path):
    cfg = dataclasses.replace(BASE, model_dir=str(tmp_path), precision="mixed_bfloat16",
                              global_bn=False, train_steps=2, checkpoint_steps=2,
                              eval_steps=1, eval_batch_size=50)
    summary = train.run(cfg)
    assert summary["global_step"] == 2 and np.isfinite(summary["loss"])
    loaded = tf.saved_model.load(summary["saved_model"])
    out = loaded(tf.zeros([1, 16, 16, 3]))
    assert out[ep.FINAL_AVG_POOL].dtype == tf.float32
    assert keras.mixed_precision.global_policy().name == "float32"  # left as it was


def test_strategies_the_machine_cannot_provide_are_named(monkeypatch):
    from simclr_tf.runs import strategies
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="multi_worker needs TF_CONFIG"):
        strategies.get_strategy("multi_worker")
    with pytest.raises(ValueError, match="needs --tpu_name"):
        strategies.get_strategy("tpu")
    # What auto resolves to, whatever this machine has: the devices are stated here.
    gpus = []
    monkeypatch.setattr(strategies.tf.config, "list_physical_devices",
                        lambda kind=None: list(gpus) if kind == "GPU" else [])
    assert strategies.resolve_name("auto") == "default"  # no GPU, TPU or cluster
    gpus.append("/physical_device:GPU:0")
    assert strategies.resolve_name("auto") == "mirrored"
    assert strategies.resolve_name("auto", tpu="local") == "tpu"
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                                "task": {"type": "worker", "index": 1}}))
    assert strategies.resolve_name("auto") == "multi_worker"
    assert not strategies.is_chief()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        strategies.resolve_name("auto")


def test_use_tpu_is_the_original_spelling_of_strategy_tpu():
    cfg = Config(model_dir="/x", use_tpu=True, tpu_name="local")
    assert cfg.strategy_name == "tpu"
    with pytest.raises(ValueError, match="needs --tpu_name"):
        Config(model_dir="/x", use_tpu=True).validate()


def test_a_batch_that_does_not_split_across_the_replicas_is_refused(two_replicas):
    with pytest.raises(ValueError, match="a batch of 5 does not split across 2 replicas"):
        step_lib.split_batch(two_replicas, tf.zeros([5, 2]))
