"""Hub-style export: checkpoint -> SavedModel -> tf.saved_model.load / hub.KerasLayer, with
the same outputs, fine-tunable, re-exportable."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub
import tf_keras as keras

import simclr_tf  # noqa: F401
from simclr_tf.core import endpoints as ep
from simclr_tf.core.config import Config
from simclr_tf.models import simclr_model as model_lib
from simclr_tf.runs import checkpoints, export
from simclr_tf.training import train


@pytest.fixture()
def run(trained_run):
    """The shared trained run (conftest): its settings and summary."""
    return trained_run


def _in_memory(cfg, prefix):
    model = model_lib.from_config(dataclasses.replace(cfg, train_mode="finetune"),
                                  checkpoints.num_classes_in(prefix))
    checkpoints.restore_for_eval(model, prefix)
    return model


def _images(n=4, size=16, seed=0):
    return tf.random.stateless_uniform([n, size, size, 3], seed=[seed, 1])


def test_training_ends_with_an_export_of_the_final_checkpoint(run):
    cfg, summary = run
    path = os.path.join(cfg.model_dir, "saved_model", "4")
    assert summary["saved_model"] == path
    assert tf.io.gfile.exists(os.path.join(path, "saved_model.pb"))
    leftovers = [n for n in os.listdir(os.path.join(cfg.model_dir, "saved_model"))
                 if n.startswith(".tmp")]
    assert not leftovers


def test_loaded_outputs_equal_the_in_memory_model(run):
    cfg, summary = run
    loaded = tf.saved_model.load(summary["saved_model"])
    model = _in_memory(cfg, tf.train.latest_checkpoint(cfg.model_dir))
    images = _images()
    expected = model(images, training=False, return_endpoints=True)
    for kwargs in ({}, {"training": False}, {"trainable": False}):
        out = loaded(images, **kwargs)
        assert set(out) == set(export.endpoint_names(True))
        for k in out:
            np.testing.assert_allclose(out[k].numpy(), expected[k].numpy(), rtol=1e-5,
                                       atol=1e-5, err_msg=k)
    serving = loaded.signatures["serving_default"](images=images)
    np.testing.assert_allclose(serving[ep.FINAL_AVG_POOL].numpy(),
                               expected[ep.FINAL_AVG_POOL].numpy(), rtol=1e-5, atol=1e-5)
    # Any image size works (the stem and the pooling are size-agnostic).
    assert loaded(_images(size=24))[ep.FINAL_AVG_POOL].shape == (4, model.encoder.feature_dim)
    # Training mode uses batch statistics: a different result from inference mode.
    train_out = loaded(images, trainable=True)[ep.FINAL_AVG_POOL].numpy()
    assert not np.allclose(train_out, expected[ep.FINAL_AVG_POOL].numpy(), atol=1e-4)


def test_hub_keras_layer_fine_tunes_and_re_exports(run, tmp_path):
    cfg, summary = run
    layer = hub.KerasLayer(summary["saved_model"], trainable=True, output_key=ep.FINAL_AVG_POOL)
    inputs = keras.Input([16, 16, 3])
    outputs = keras.layers.Dense(3, name="classifier")(layer(inputs))
    model = keras.Model(inputs, outputs)
    loaded = tf.saved_model.load(summary["saved_model"])
    encoder_trainable = len(loaded.trainable_variables)
    assert encoder_trainable > 20
    assert len(layer.trainable_weights) == encoder_trainable
    moving = [w for w in layer.weights if "moving_mean" in w.name]
    assert moving
    before = [w.numpy().copy() for w in moving]
    images, labels = _images(8), tf.constant([0, 1, 2, 0, 1, 2, 0, 1])
    with tf.GradientTape() as tape:
        logits = model(images, training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    grads = tape.gradient(loss, layer.trainable_weights)
    assert all(g is not None for g in grads)
    assert sum(float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads) > 0.5 * len(grads)
    # Batch norm updated its moving statistics in training mode.
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, moving))
    opt = keras.optimizers.legacy.SGD(0.1)
    opt.apply_gradients(zip(grads, layer.trainable_weights))
    expected = model(images, training=False).numpy()
    path = str(tmp_path / "fine_tuned")
    model.save(path, include_optimizer=False)
    again = keras.models.load_model(path, custom_objects={"KerasLayer": hub.KerasLayer})
    np.testing.assert_allclose(again(images, training=False).numpy(), expected, rtol=1e-5,
                               atol=1e-5)


def test_frozen_hub_layer_keeps_everything_fixed(run):
    _, summary = run
    layer = hub.KerasLayer(summary["saved_model"], trainable=False,
                           output_key=ep.FINAL_AVG_POOL)
    layer(_images())
    assert layer.trainable_weights == []
    before = [w.numpy().copy() for w in layer.weights]
    a = layer(_images(), training=True).numpy()
    b = layer(_images(), training=False).numpy()
    np.testing.assert_array_equal(a, b)  # inference mode whatever Keras asks
    for w, v in zip(layer.weights, before):
        np.testing.assert_array_equal(w.numpy(), v)


def test_re_export_replaces_atomically(run, tmp_path):
    cfg, _ = run
    target = str(tmp_path / "export")
    export.export_checkpoint(cfg, cfg.model_dir, target)
    first = tf.saved_model.load(target)(_images())[ep.PROJ_HEAD_OUTPUT].numpy()
    export.export_checkpoint(cfg, os.path.join(cfg.model_dir, "ckpt-2"), target)
    second = tf.saved_model.load(target)(_images())[ep.PROJ_HEAD_OUTPUT].numpy()
    assert not np.allclose(first, second)  # the older checkpoint replaced the export
    assert sorted(os.listdir(tmp_path)) == ["export"]


def test_only_the_newest_exports_are_kept(run, tmp_path):
    cfg, _ = run
    cfg2 = dataclasses.replace(cfg, model_dir=str(tmp_path), train_steps=2,
                               lineareval_while_pretraining=False, keep_hub_module_max=1)
    train.run(cfg2)
    train.run(dataclasses.replace(cfg2, train_steps=4))
    assert [os.path.basename(p) for p in export.list_exports(str(tmp_path))] == ["4"]
    loaded = tf.saved_model.load(export.list_exports(str(tmp_path))[0])
    assert ep.LOGITS_SUP not in loaded(_images())  # no probe, no supervised logits


LINEAR = dict(train_mode="finetune", linear_eval=True, optimizer="momentum", learning_rate=20.0,
              weight_decay=0.0, train_steps=6, checkpoint_steps=6, eval_steps=0,
              eval_batch_size=100, zero_init_logits_layer=True, keep_hub_module_max=0,
              lineareval_while_pretraining=False)


def test_linear_eval_of_the_export_equals_that_of_its_checkpoint(run, tmp_path):
    cfg, summary = run
    from_ckpt = train.run(dataclasses.replace(cfg, model_dir=str(tmp_path / "ckpt"),
                                              checkpoint=cfg.model_dir, **LINEAR))
    from_hub = train.run(dataclasses.replace(cfg, model_dir=str(tmp_path / "hub"),
                                             hub_module=summary["saved_model"], **LINEAR))
    assert from_hub["top1"] == pytest.approx(from_ckpt["top1"], abs=0.005)
    assert from_hub["loss"] == pytest.approx(from_ckpt["loss"], rel=1e-3)
    # The same batches through the same frozen features give the same linear head.
    key = checkpoints.SUPERVISED_KERNEL
    a = tf.train.load_variable(tf.train.latest_checkpoint(str(tmp_path / "ckpt")), key)
    b = tf.train.load_variable(tf.train.latest_checkpoint(str(tmp_path / "hub")), key)
    assert np.abs(a).max() > 1e-3  # it did train
    np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5)


def test_full_fine_tune_of_an_export_trains_it_and_exports_again(run, tmp_path):
    cfg, summary = run
    tuned = train.run(dataclasses.replace(
        cfg, model_dir=str(tmp_path), hub_module=summary["saved_model"], train_mode="finetune",
        train_steps=2, checkpoint_steps=2, keep_hub_module_max=1))
    before = tf.saved_model.load(summary["saved_model"])
    after = tf.saved_model.load(tuned["saved_model"])
    changed = [a.name for a, b in zip(after.trainable_variables, before.trainable_variables)
               if not np.allclose(a.numpy(), b.numpy())]
    assert len(changed) > 10
    out = after(_images())
    assert ep.LOGITS_SUP in out and out[ep.LOGITS_SUP].shape == (4, 10)


@pytest.mark.parametrize("overrides,match", [
    (dict(checkpoint="/x"), "not both"),
    (dict(fine_tune_after_block=2), "cannot freeze part"),
    (dict(ft_proj_selector=1), "ft_proj_selector=1"),
    (dict(train_mode="pretrain"), "is for fine-tuning"),
])
def test_hub_module_misuse_is_named(overrides, match, tmp_path):
    args = dict(hub_module="/some/export", train_mode="finetune", model_dir=str(tmp_path))
    args.update(overrides)
    with pytest.raises(ValueError, match=match):
        Config(**args).validate()


def test_hub_module_that_is_not_an_export(tiny, tmp_path):
    cfg = tiny(tmp_path / "run", train_mode="finetune",
               hub_module=str(tmp_path / "nothing_here"))
    with pytest.raises(ValueError, match=r"^--hub_module='.*nothing_here' does not exist; "
                                         "give an export of simclr_tf"):
        train.run(cfg)


def test_exports_use_tf_convolutions_only(run):
    # The CPU-only matmul convolutions (convs.conv3x3_as_matmul, used in training here: 2x2
    # and 4x4 block groups) must not reach a SavedModel that may be served on a GPU or TPU.
    from tensorflow.core.protobuf import saved_model_pb2  # noqa: PLC0415

    cfg, summary = run
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(summary["saved_model"], "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    ops = [node.op for graph in proto.meta_graphs
           for fn in graph.graph_def.library.function for node in fn.node_def]
    assert "Conv2D" in ops and "GatherV2" not in ops
