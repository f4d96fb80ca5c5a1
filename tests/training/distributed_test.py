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

BASE = Config(model_dir="/unused", dataset="shapes", image_size=16, resnet_depth=18,
              width_multiplier=0.25, num_proj_layers=2, proj_out_dim=16, train_batch_size=8,
              temperature=0.5, weight_decay=1e-4, global_bn=True, use_blur=True, seed=3,
              lineareval_while_pretraining=True, strategy="default")
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


def test_step_compiles_with_xla_on_one_replica(one_replica):
    cfg = dataclasses.replace(BASE, global_bn=False)
    weights = _reference_weights(cfg)
    eager_loss, _, eager_w = _one_step(_Step(cfg, one_replica, weights), one_replica)
    xla_loss, _, xla_w = _one_step(_Step(cfg, one_replica, weights), one_replica, jit=True)
    assert xla_loss == pytest.approx(eager_loss, rel=1e-4)
    _assert_same_updates(xla_w, eager_w, weights, rel=5e-3)


@pytest.mark.parametrize("precision,rel", [("mixed_bfloat16", 0.05), ("mixed_float16", 0.01)])
def test_mixed_precision_loss_agrees_with_float32(one_replica, precision, rel):
    cfg = dataclasses.replace(BASE, global_bn=False)
    weights = _reference_weights(cfg)
    loss32, logs32, _ = _one_step(_Step(cfg, one_replica, weights), one_replica)
    mixed = dataclasses.replace(cfg, precision=precision)
    trainer = _Step(mixed, one_replica, weights)
    conv = trainer.model.encoder.stem.conv.conv
    assert conv.compute_dtype == precision.split("_")[1] and conv.kernel.dtype == tf.float32
    loss_mp, logs_mp, w_mp = _one_step(trainer, one_replica)
    # Stated tolerance: bfloat16 keeps 8 bits of mantissa, float16 11.
    assert loss_mp == pytest.approx(loss32, rel=rel)
    assert logs_mp["contrast_loss"] == pytest.approx(logs32["contrast_loss"], rel=rel)
    assert all(np.all(np.isfinite(w)) for w in w_mp)
    assert not all(np.allclose(a, b) for a, b in zip(w_mp, weights))  # it trained


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
