"""Tests of the SimCLR model: view handling, outputs, and where gradients may flow."""

import re

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from simclr_tf.core import endpoints as ep
from simclr_tf.models import simclr_model as model_lib
from simclr_tf.training import optim

SIZE = 16


def _tiny(**kwargs):
    args = dict(resnet_depth=18, width_multiplier=0.25, image_size=SIZE, proj_out_dim=8,
                num_proj_layers=2, num_classes=5)
    args.update(kwargs)
    model = model_lib.build_model(**args)
    model(tf.zeros([1, SIZE, SIZE, 3]), training=False)
    return model


def _views(batch=4, seed=0):
    return tf.random.stateless_uniform([batch, SIZE, SIZE, 6], seed=[seed, 1])


def test_split_views_orders_view_one_first():
    images = tf.reshape(tf.range(2 * 2 * 2 * 6, dtype=tf.float32), [2, 2, 2, 6])
    out = model_lib.split_views(images)
    np.testing.assert_array_equal(out[:2].numpy(), images[..., :3].numpy())
    np.testing.assert_array_equal(out[2:].numpy(), images[..., 3:].numpy())
    with pytest.raises(ValueError, match="4 channels"):
        model_lib.split_views(tf.zeros([1, 2, 2, 4]))


def test_outputs_and_shapes():
    model = _tiny()
    out = model(_views(), training=False, return_endpoints=True)
    assert set(out) == {*ep.ENCODER_ENDPOINTS, ep.PROJ_HEAD_INPUT, ep.PROJ_HEAD_OUTPUT,
                        ep.LOGITS_SUP}
    feat = model.encoder.feature_dim
    assert out[ep.FINAL_AVG_POOL].shape == [8, feat]
    assert out[ep.PROJ_HEAD_OUTPUT].shape == [8, 8]
    assert out[ep.LOGITS_SUP].shape == [8, 5]
    np.testing.assert_array_equal(out[ep.PROJ_HEAD_INPUT], out[ep.FINAL_AVG_POOL])
    short = model(_views(), training=False)
    assert set(short) == {ep.FINAL_AVG_POOL, ep.PROJ_HEAD_INPUT, ep.PROJ_HEAD_OUTPUT,
                          ep.LOGITS_SUP}
    no_head = _tiny(num_classes=None)
    assert ep.LOGITS_SUP not in no_head(_views(), training=False)


def test_both_views_share_one_forward_pass():
    # In training mode batch norm uses batch statistics: the model's output must equal the
    # encoder on the 2N concatenated images, and differ from running each view on its own.
    model = _tiny()
    images = _views(seed=3)
    v1, v2 = images[..., :3], images[..., 3:]
    got = model(images, training=True)[ep.FINAL_AVG_POOL].numpy()
    joint = model.encoder(tf.concat([v1, v2], 0), training=True).numpy()
    separate = np.concatenate([model.encoder(v1, training=True).numpy(),
                               model.encoder(v2, training=True).numpy()])
    np.testing.assert_allclose(got, joint, rtol=1e-5, atol=1e-6)
    assert np.abs(got - separate).max() > 1e-4


def _grads_of_supervised_loss(model):
    images = _views(seed=5)
    labels = tf.constant([0, 1, 2, 3, 0, 1, 2, 3])
    with tf.GradientTape() as tape:
        logits = model(images, training=True)[ep.LOGITS_SUP]
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    variables = model.trainable_variables
    return {v.name: g for v, g in zip(variables, tape.gradient(loss, variables))}


def _nonzero(grad):
    return grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0


def test_pretraining_probe_sends_no_label_gradient_to_encoder_or_projection_head():
    model = _tiny(mode="pretrain", ft_proj_selector=1)
    grads = _grads_of_supervised_loss(model)
    encoder_and_head = {v.name for v in model.encoder.trainable_variables +
                        model.projection_head.trainable_variables}
    assert encoder_and_head and all(not _nonzero(grads[n]) for n in encoder_and_head)
    sup = [v.name for v in model.supervised_head.trainable_variables]
    assert all(_nonzero(grads[n]) for n in sup)


def test_fine_tuning_sends_label_gradient_to_encoder():
    model = _tiny(mode="finetune", ft_proj_selector=1)
    grads = _grads_of_supervised_loss(model)
    # At initialisation the zero gamma of each block's last batch norm blocks the gradient
    # into the residual branch, so check the path that is open: the stem, every projection
    # shortcut and every zero-initialised gamma.
    open_path = [v.name for v in model.encoder.trainable_variables
                 if "stem/conv/" in v.name or "shortcut/projection" in v.name
                 or (v.name.endswith("gamma:0") and not np.any(v.numpy()))]
    assert len(open_path) > 8 and all(_nonzero(grads[n]) for n in open_path)
    assert _nonzero(grads[model.projection_head.layers_[0].dense.kernel.name])


def test_linear_eval_trains_only_the_linear_head_and_freezes_everything_else():
    model = _tiny(mode="finetune", fine_tune_after_block=4, ft_proj_selector=1)
    trainable = {v.name for v in model.trainable_variables}
    assert trainable == {v.name for v in model.supervised_head.variables}
    before = [v.numpy().copy() for v in model.encoder.variables + model.projection_head.variables]
    opt = keras.optimizers.legacy.SGD(0.5)
    for _ in range(2):
        with tf.GradientTape() as tape:
            logits = model(_views(seed=7), training=True)[ep.LOGITS_SUP]
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                tf.zeros([8], tf.int32), logits))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                model.trainable_variables))
    after = [v.numpy() for v in model.encoder.variables + model.projection_head.variables]
    for b, a in zip(before, after):  # moving statistics included: bit-identical
        np.testing.assert_array_equal(b, a)


def test_pretrain_rejects_partial_fine_tuning():
    with pytest.raises(ValueError, match="fine_tune_after_block=2"):
        model_lib.build_model(resnet_depth=18, width_multiplier=0.25, image_size=SIZE,
                              mode="pretrain", fine_tune_after_block=2)
    with pytest.raises(ValueError, match="mode='train'"):
        model_lib.SimCLRModel(None, None, mode="train")


@pytest.mark.parametrize("mode", ["linear", "none"])
def test_linear_and_none_projection_heads_work(mode):
    # Both crash in the original (docs/faithfulness.md, defect 2).
    model = _tiny(proj_head_mode=mode)
    out = model(_views(), training=True)
    expected = model.encoder.feature_dim if mode == "none" else 8
    assert out[ep.PROJ_HEAD_OUTPUT].shape == [8, expected]


def _structural_exclusions(model):
    """Variables that LARS must neither decay nor adapt, found by structure, not by name."""
    refs = set()
    for layer in model.submodules:
        if isinstance(layer, keras.layers.BatchNormalization):
            refs |= {v.ref() for v in layer.variables}
        if isinstance(layer, keras.layers.Dense) and layer.use_bias:
            refs.add(layer.bias.ref())
    refs |= {v.ref() for v in model.supervised_head.variables}
    return refs


@pytest.mark.parametrize("sk_ratio", [0.0, 0.0625])
def test_optimizer_exclusion_names_match_the_structure_exactly(sk_ratio):
    model = _tiny(sk_ratio=sk_ratio, num_proj_layers=3)
    by_name = {v.ref() for v in model.variables
               if any(re.search(p, v.name) for p in optim.EXCLUDE_FROM_WEIGHT_DECAY)}
    assert by_name == _structural_exclusions(model)
    assert len({v.name for v in model.variables}) == len(model.variables)  # names unique
