"""LARS against the update written by hand, the exclusions, the schedule's worked values."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import simclr_tf  # noqa: F401
from simclr_tf.core import step_plan
from simclr_tf.training import optim


def test_worked_step_counts_from_spec():
    # ImageNet: N = 1,281,167, B = 4096, 100 epochs, 10 warm-up epochs.
    assert step_plan.total_train_steps(1_281_167, 4096, 100) == 31_279
    assert step_plan.epochs_to_steps(10, 1_281_167, 4096) == 3_127
    # CIFAR-10: N = 50,000, B = 512, 1000 epochs.
    assert step_plan.total_train_steps(50_000, 512, 1000) == 97_657
    assert step_plan.epochs_to_steps(10, 50_000, 512) == 976
    assert step_plan.total_train_steps(None, 512, 1000, train_steps=123) == 123
    with pytest.raises(ValueError, match="train_steps"):
        step_plan.total_train_steps(None, 512, 100)


def test_learning_rate_scaling():
    assert optim.scale_learning_rate(0.3, 4096, "linear") == pytest.approx(4.8)
    assert optim.scale_learning_rate(0.075, 4096, "sqrt") == pytest.approx(4.8)
    assert optim.scale_learning_rate(1.0, 512, "linear") == pytest.approx(2.0)
    with pytest.raises(ValueError, match="'log'"):
        optim.scale_learning_rate(0.3, 256, "log")


def test_schedule_worked_values():
    schedule = optim.WarmUpAndCosineDecay(2.0, 976, 97_657)
    assert float(schedule(0)) == 0.0
    assert float(schedule(1)) == pytest.approx(0.00205, abs=5e-6)
    assert float(schedule(976)) == pytest.approx(2.0)
    assert float(schedule(50_000)) == pytest.approx(0.978, abs=5e-4)
    assert float(schedule(97_656)) == pytest.approx(0.0, abs=1e-9)
    assert float(schedule(120_000)) == pytest.approx(0.0, abs=1e-9)


def test_schedule_against_formula_everywhere():
    peak, warm, total = 1.5, 7, 40
    schedule = optim.WarmUpAndCosineDecay(peak, warm, total)
    for t in range(0, 50):
        if t < warm:
            expected = peak * t / warm
        else:
            expected = peak * 0.5 * (1 + math.cos(math.pi * min(t - warm, total - warm)
                                                  / (total - warm)))
        assert float(schedule(t)) == pytest.approx(expected, abs=1e-6), t
    no_warmup = optim.WarmUpAndCosineDecay(1.0, 0, 10)
    assert float(no_warmup(0)) == pytest.approx(1.0)
    assert keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule),
        custom_objects={"WarmUpAndCosineDecay": optim.WarmUpAndCosineDecay}).get_config() \
        == schedule.get_config()


class _Named(keras.layers.Layer):
    """Creates variables with chosen names so the exclusion regexes can be checked."""

    def build(self, _):
        self.kernel = self.add_weight("conv2d/kernel", shape=(3, 4),
                                      initializer=keras.initializers.RandomNormal(seed=1))
        self.gamma = self.add_weight("batch_normalization/gamma", shape=(4,),
                                     initializer=keras.initializers.RandomNormal(seed=2))
        self.head = self.add_weight("head_supervised/kernel", shape=(4, 2),
                                    initializer=keras.initializers.RandomNormal(seed=3))


def _lars_reference(w, g, lr, momentum, wd, eeta, v, excluded):
    """One step of docs/method.md's LARS, written from the equations."""
    if not excluded:
        g = g + wd * w
    trust = 1.0
    if not excluded:
        wn, gn = np.linalg.norm(w), np.linalg.norm(g)
        trust = eeta * wn / gn if wn > 0 and gn > 0 else 1.0
    v = momentum * v + lr * trust * g
    return w - v, v


def test_lars_two_steps_match_hand_written_update():
    layer = _Named()
    layer.build(None)
    variables = [layer.kernel, layer.gamma, layer.head]
    lr, mom, wd, eeta = 0.7, 0.9, 0.01, 0.001
    opt = optim.build_optimizer("lars", lr, momentum=mom, weight_decay=wd, eeta=eeta)
    rng = np.random.default_rng(0)
    state = {v.name: (v.numpy().astype(np.float64), np.zeros(v.shape)) for v in variables}
    for _ in range(2):
        grads = [rng.normal(size=v.shape).astype(np.float32) for v in variables]
        opt.apply_gradients(zip([tf.constant(g) for g in grads], variables))
        for v, g in zip(variables, grads):
            w, vel = state[v.name]
            excluded = "batch_normalization" in v.name or "head_supervised" in v.name
            state[v.name] = _lars_reference(w, g.astype(np.float64), lr, mom, wd, eeta, vel,
                                            excluded)
            np.testing.assert_allclose(v.numpy(), state[v.name][0], rtol=1e-5, atol=1e-7,
                                       err_msg=v.name)
    # The adapted kernel moved far less than the excluded ones (trust ratio ~ eeta).
    assert np.abs(state[layer.kernel.name][1]).max() < 0.01 * np.abs(
        state[layer.gamma.name][1]).max()


def test_exclusion_regexes_match_exactly_the_intended_variables():
    model = keras.Sequential([
        keras.layers.Dense(3, use_bias=False, name="dense"),
        keras.layers.BatchNormalization(name="batch_normalization"),
        keras.layers.Dense(2, name="head_supervised"),
    ])
    model.build((None, 4))
    import re
    excluded = {v.name for v in model.variables
                if any(re.search(p, v.name) for p in optim.EXCLUDE_FROM_WEIGHT_DECAY)}
    assert excluded == {v.name for v in model.variables if "dense/" not in v.name}


def test_weight_decay_loss():
    dense = keras.layers.Dense(3, use_bias=False, name="dense")
    bn = keras.layers.BatchNormalization(name="batch_normalization")
    head = keras.layers.Dense(2, name="head_supervised")
    x = tf.ones((2, 4))
    head(bn(dense(x)))
    head.bias.assign([1.0, 2.0])
    variables = dense.trainable_variables + bn.trainable_variables + head.trainable_variables
    wd = 0.1
    half_sq = lambda v: 0.5 * float(np.sum(v.numpy() ** 2))  # noqa: E731
    lars = optim.weight_decay_loss(variables, wd, "lars")
    assert float(lars) == pytest.approx(wd * half_sq(head.kernel), rel=1e-6)
    other = optim.weight_decay_loss(variables, wd, "momentum")
    expected = wd * (half_sq(dense.kernel) + half_sq(head.kernel) + half_sq(head.bias))
    assert float(other) == pytest.approx(expected, rel=1e-6)
    assert float(optim.weight_decay_loss(variables, 0.0, "momentum")) == 0.0


def test_momentum_is_nesterov_and_adam_builds():
    v = tf.Variable([1.0, -2.0])
    opt = optim.build_optimizer("momentum", 0.1, momentum=0.9)
    g = np.array([0.5, 0.25])
    # Keras' Nesterov form: m = mu*m - lr*g; w += mu*m - lr*g.
    m = np.zeros(2)
    w = v.numpy().astype(np.float64)
    for _ in range(2):
        opt.apply_gradients([(tf.constant(g, tf.float32), v)])
        m = 0.9 * m - 0.1 * g
        w = w + 0.9 * m - 0.1 * g
    np.testing.assert_allclose(v.numpy(), w, rtol=1e-6)
    assert isinstance(optim.build_optimizer("adam", 0.1), keras.optimizers.legacy.Adam)
    with pytest.raises(ValueError, match="'sgd'"):
        optim.build_optimizer("sgd", 0.1)
