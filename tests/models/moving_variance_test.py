"""Batch norm's moving variance by layer kind, against the original's layer for
``--global_bn=false`` (Keras's unfused ``BatchNormalization(fused=False)``) and NumPy.

Where ours runs TF's fused kernel (the encoder's batch norms on 4-D inputs, not synchronised:
one replica, or ``--global_bn=false``), or its CPU formulation (``cpu_batch_norm``), the
moving variance averages the unbiased batch variance: n / (n - 1) times the original's, n
the values per channel in the replica's batch (2B x H x W in pretraining, both views in one
pass). The projection head's batch norms (2-D inputs) are never fused, and the synchronised
layer (``--global_bn=true`` on several replicas) is the original's: ratio 1. docs/
faithfulness.md says so.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from simclr_tf.models import heads, resnet
from simclr_tf.models import simclr_model as model_lib

MOMENTUM, EPS = 0.9, 1e-5


def _from_zero(bn):
    """Moving variance 0, so that one training call leaves (1 - momentum) x what it averages
    in, without the rounding of a difference from 1 (small variances lost digits)."""
    bn.moving_variance.assign(tf.zeros_like(bn.moving_variance))


def _averaged_in(bn) -> np.ndarray:
    """The batch variance one training call averaged into the moving variance (from 0)."""
    return bn.moving_variance.numpy() / (1 - MOMENTUM)


def _original(x) -> np.ndarray:
    bn = keras.layers.BatchNormalization(momentum=MOMENTUM, epsilon=EPS, fused=False)
    bn(x, training=False)
    _from_zero(bn)
    bn(x, training=True)
    return _averaged_in(bn)


def _inputs(shape, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(1.0, 2.0, shape), tf.float32)


# Two views of 4 images at 2 x 2 and 4 x 4 px (the last block groups' sizes), and a case
# where n / (n - 1) is 2: two 1 x 1 values per channel.
@pytest.mark.parametrize("shape", [(8, 2, 2, 3), (8, 4, 4, 3), (2, 1, 1, 3)])
@pytest.mark.parametrize("kernel", ["tf", "cpu_batch_norm"])
def test_the_encoder_s_batch_norm_averages_n_over_n_minus_1_times_the_original_s(
        shape, kernel):
    x = _inputs(shape)
    settings = resnet._Settings(global_bn=False, decay=MOMENTUM, epsilon=EPS,
                                kernel_chooser=lambda _: kernel == "cpu_batch_norm")
    layer = settings.bn(relu=False)
    layer(x, training=False)  # built; inference leaves the moving statistics as they are
    _from_zero(layer.bn)
    step = tf.function(lambda: layer(x, training=True))  # the chooser decides traced calls
    ops = {op.type for op in step.get_concrete_function().graph.get_operations()}
    assert ("FusedBatchNormV3" in ops) == (kernel == "tf"), ops
    step()
    n = shape[0] * shape[1] * shape[2]
    flat = x.numpy().reshape(-1, shape[-1])
    np.testing.assert_allclose(_original(x), flat.var(0), rtol=1e-5)  # the biased variance
    np.testing.assert_allclose(_averaged_in(layer.bn) / _original(x), n / (n - 1), rtol=1e-4)


def test_the_projection_head_s_batch_norm_is_the_original_s():
    x = _inputs([8, 6])
    layer = heads._DenseBN(5, center=True, global_bn=False, bn_decay=MOMENTUM, bn_epsilon=EPS)
    layer(x, training=False)
    _from_zero(layer.bn)
    layer(x, training=True)
    dense = (x @ layer.dense.kernel).numpy()
    np.testing.assert_allclose(_averaged_in(layer.bn), dense.var(0), rtol=1e-4)
    np.testing.assert_allclose(_averaged_in(layer.bn), _original(dense), rtol=1e-5)


def test_the_synchronised_layer_averages_the_biased_variance_of_the_global_batch(
        two_replicas):
    x = _inputs([8, 2, 2, 3])
    with two_replicas.scope():
        layer = resnet._Settings(global_bn=True, decay=MOMENTUM, epsilon=EPS).bn(relu=False)
        layer(x[:1], training=False)
        _from_zero(layer.bn)
    halves = two_replicas.experimental_distribute_values_from_function(
        lambda ctx: x[4 * ctx.replica_id_in_sync_group:4 * (ctx.replica_id_in_sync_group + 1)])
    tf.function(lambda: two_replicas.run(lambda h: layer(h, training=True), (halves,)))()
    np.testing.assert_allclose(_averaged_in(layer.bn), _original(x), rtol=1e-4)


def test_in_a_model_the_encoder_s_batch_norms_are_fused_and_the_head_s_are_not():
    model = model_lib.build_model(resnet_depth=18, width_multiplier=0.25, image_size=16,
                                  global_bn=False, num_proj_layers=2, proj_out_dim=8,
                                  num_classes=None, mode="pretrain")
    model(tf.zeros([2, 16, 16, 6]), training=True)
    def norms(part):
        return [m for m in part.submodules if isinstance(m, keras.layers.BatchNormalization)]

    encoder, head = norms(model.encoder), norms(model.projection_head)
    assert len(encoder) == 21 and len(head) == 2  # stem, 8 blocks x 2, 4 shortcuts
    assert all(bn.fused for bn in encoder) and not any(bn.fused for bn in head)
