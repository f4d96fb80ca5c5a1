"""Tests of the projection head and the supervised head against NumPy references."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from simclr_tf.models import heads

EPS = 1e-5


def _randomise_bn(layer, rng):
    """Gives every batch norm of `layer` non-trivial parameters and moving statistics."""
    for bn in [m for m in layer.submodules if isinstance(m, keras.layers.BatchNormalization)]:
        for v in bn.variables:
            if "moving_variance" in v.name:
                v.assign(rng.uniform(0.5, 2.0, v.shape).astype(np.float32))
            else:
                v.assign(rng.normal(0.0, 0.5, v.shape).astype(np.float32))


def _numpy_head(head, x):
    """The head's inference-mode forward pass written from docs/method.md in NumPy."""
    hiddens = [x]
    for j, layer in enumerate(head.layers_):
        bn = layer.bn
        y = x @ layer.dense.kernel.numpy()
        gamma = bn.gamma.numpy()
        beta = bn.beta.numpy() if bn.center else 0.0
        y = gamma * (y - bn.moving_mean.numpy()) / np.sqrt(bn.moving_variance.numpy() + EPS)
        y = y + beta
        if j < len(head.layers_) - 1:
            y = np.maximum(y, 0.0)
        hiddens.append(y)
        x = y
    return x, hiddens


@pytest.mark.parametrize("mode,num_layers,expected_taps", [
    ("nonlinear", 3, 4), ("nonlinear", 2, 3), ("linear", 3, 2), ("none", 3, 1)])
def test_projection_head_matches_numpy(mode, num_layers, expected_taps):
    rng = np.random.default_rng(0)
    head = heads.ProjectionHead(mode, num_layers, proj_out_dim=5)
    x = rng.normal(size=(4, 8)).astype(np.float32)
    head(x, training=False)
    _randomise_bn(head, rng)
    z, hiddens = head(x, training=False)
    ref_z, ref_hiddens = _numpy_head(head, x)
    assert len(hiddens) == expected_taps
    np.testing.assert_allclose(z.numpy(), ref_z, rtol=1e-4, atol=1e-5)
    for got, ref in zip(hiddens, ref_hiddens):
        np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-4, atol=1e-5)
    assert z.shape[-1] == (8 if mode == "none" else 5)


def test_nonlinear_layout_centre_and_widths():
    head = heads.ProjectionHead("nonlinear", num_proj_layers=3, proj_out_dim=7)
    head(tf.zeros([2, 16]))
    assert [layer.dense.units for layer in head.layers_] == [16, 16, 7]
    assert [layer.bn.center for layer in head.layers_] == [True, True, False]
    assert all(layer.bn.scale for layer in head.layers_)
    assert all(not layer.dense.use_bias for layer in head.layers_)
    assert [layer.name for layer in head.layers_] == ["nl_0", "nl_1", "nl_2"]
    assert all(bn.momentum == 0.9 and bn.epsilon == 1e-5 for bn in
               [layer.bn for layer in head.layers_])


def test_resnet50_head_parameter_counts():
    # FACTS 5.1: a 3-layer head on R50 1x has 8.66M parameters, a 1000-class head 2.05M.
    head = heads.ProjectionHead("nonlinear", 3, 128)
    head(tf.zeros([1, 2048]))
    count = sum(int(np.prod(v.shape)) for v in head.trainable_variables)
    assert count == 2 * (2048 * 2048 + 2 * 2048) + 2048 * 128 + 128 == 8_659_072
    sup = heads.SupervisedHead(1000)
    sup(tf.zeros([1, 2048]))
    assert sum(int(np.prod(v.shape)) for v in sup.trainable_variables) == 2_049_000


def test_middle_taps_are_after_relu_and_output_is_not():
    head = heads.ProjectionHead("nonlinear", 3, 6)
    x = tf.random.normal([32, 12], seed=1)
    z, hiddens = head(x, training=True)
    assert np.all(hiddens[1].numpy() >= 0) and np.all(hiddens[2].numpy() >= 0)
    assert np.any(z.numpy() < 0)  # BN without ReLU: centred outputs are signed


@pytest.mark.parametrize("selector,index", [(0, 0), (1, 1), (-1, 3), (3, 3)])
def test_ft_proj_selector_taps(selector, index):
    head = heads.ProjectionHead("nonlinear", 3, 4, ft_proj_selector=selector)
    z, hiddens = head(tf.random.normal([3, 6], seed=2), training=False)
    np.testing.assert_array_equal(head.select(hiddens).numpy(), hiddens[index].numpy())


@pytest.mark.parametrize("kwargs,needle", [
    (dict(mode="mlp"), "proj_head_mode='mlp'"),
    (dict(mode="nonlinear", num_proj_layers=0), "num_proj_layers=0"),
    (dict(mode="nonlinear", num_proj_layers=2, ft_proj_selector=3), "ft_proj_selector=3"),
    (dict(mode="linear", ft_proj_selector=-3), "ft_proj_selector=-3"),
    (dict(mode="linear", proj_out_dim=0), "proj_out_dim=0"),
])
def test_bad_projection_head_arguments(kwargs, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        heads.ProjectionHead(**kwargs)


def test_supervised_head_init_and_naming():
    head = heads.SupervisedHead(10)
    head(tf.zeros([1, 64]))
    kernel, bias = head.dense.kernel.numpy(), head.dense.bias.numpy()
    assert abs(kernel.std() - 0.01) < 0.002 and np.all(bias == 0)
    names = [v.name for v in head.variables]
    assert all(n.startswith("head_supervised/") for n in names), names
    zero = heads.SupervisedHead(10, zero_init=True)
    logits = zero(tf.random.normal([4, 64]))
    np.testing.assert_array_equal(logits.numpy(), np.zeros([4, 10]))
    with pytest.raises(ValueError, match="num_classes=0"):
        heads.SupervisedHead(0)
    assert heads.build_supervised_head(None) is None and heads.build_supervised_head(0) is None
