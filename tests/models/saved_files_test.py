"""The checks of saved files before they are read, on files TensorFlow wrote: a checkpoint's
index read without TensorFlow's reader (the lengths it gives are the data files' sizes), a
file cut short or missing named in one line, and an export of this project told from other
programs' SavedModels (a ``tf.Module`` and a Keras model as ``tf.saved_model.save`` and Keras
write them)."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from simclr_tf.models import saved_files


def _cut(path, fraction=0.5):
    with open(path, "rb") as f:
        payload = f.read()
    with open(path, "wb") as f:
        f.write(payload[:int(len(payload) * fraction)])


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """A checkpoint written by TensorFlow in three data files (at most 5,000 bytes each)."""
    variables = {f"v{i}": tf.Variable(np.arange(1000 * (i + 1), dtype=np.float32))
                 for i in range(2)}
    policy = tf.train.experimental.MaxShardSizePolicy(max_shard_size=5000)
    return tf.train.Checkpoint(**variables).write(
        str(tmp_path_factory.mktemp("shards") / "ckpt"),
        options=tf.train.CheckpointOptions(experimental_sharding_callback=policy))


def test_the_index_gives_each_data_file_its_length(shards, trained_run):
    files = saved_files.data_files(shards)
    assert len(files) == 3 and all(os.path.exists(f) for f in files)
    # TensorFlow writes each data file's tensors end to end: their last byte is the file's.
    assert saved_files.needed_lengths(shards + ".index") == {
        k: os.path.getsize(f) for k, f in enumerate(files)}
    cfg, summary = trained_run
    for prefix in (tf.train.latest_checkpoint(cfg.model_dir),
                   os.path.join(summary["saved_model"], "variables", "variables")):
        (data,) = saved_files.data_files(prefix)
        assert saved_files.needed_lengths(prefix + ".index") == {0: os.path.getsize(data)}
        saved_files.check_bundle(prefix, "whole")  # no error


def test_a_data_file_cut_short_or_missing_is_named(shards, tmp_path):
    for name in os.listdir(os.path.dirname(shards)):
        shutil.copy(os.path.join(os.path.dirname(shards), name), tmp_path)
    copy = os.path.join(tmp_path, os.path.basename(shards))
    second = saved_files.data_files(copy)[1]
    whole = os.path.getsize(second)
    _cut(second, 0.9)
    with pytest.raises(saved_files.DamagedFileError,
                       match=rf"^run X: {second} is cut short: {int(whole * 0.9):,} bytes "
                             rf"where its index needs {whole:,}"):
        saved_files.check_bundle(copy, "run X")
    os.remove(second)
    with pytest.raises(saved_files.DamagedFileError, match=rf"{second} is missing"):
        saved_files.check_bundle(copy, "run X")
    _cut(copy + ".index", 0.5)
    with pytest.raises(saved_files.DamagedFileError, match=r"is not a checkpoint index"):
        saved_files.check_bundle(copy, "run X")
    os.remove(copy + ".index")
    with pytest.raises(saved_files.DamagedFileError, match=r"ckpt.index is missing"):
        saved_files.check_bundle(copy, "run X")


def test_what_a_path_holds_is_said(tmp_path):
    (tmp_path / "notes.txt").write_text("my notes\nmore\n")
    (tmp_path / "blob").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "empty").mkdir()
    assert saved_files.describe(str(tmp_path / "notes.txt")) == (
        "a text file of 14 bytes starting 'my notes'")
    assert saved_files.describe(str(tmp_path / "blob")) == "a binary file of 1,024 bytes"
    assert saved_files.describe(str(tmp_path / "empty")) == "an empty folder"
    assert saved_files.describe(str(tmp_path)) == (
        "a folder of 3 entries ('blob', 'empty', 'notes.txt')")
    assert saved_files.describe(str(tmp_path / "nothing")) == "missing"


def _foreign_savedmodels(root):
    """Other programs' SavedModels: a tf.Module with a signature, and a Keras model."""
    module = tf.Module()
    module.w = tf.Variable(tf.ones([3, 4]))
    module.f = tf.function(lambda x: {"features": tf.reduce_mean(x, [1, 2]) @ module.w},
                           input_signature=[tf.TensorSpec([None, None, None, 3])])
    tf.saved_model.save(module, str(root / "module"), signatures=module.f)
    model = keras.Sequential([keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D()])
    model(tf.zeros([1, 8, 8, 3]))
    model.save(str(root / "keras"), save_format="tf")
    return {"module": "its root holds f, signatures, w and its serving_default returns "
                      "features",
            "keras": "its serving_default returns global_average_pooling2d"}


def test_an_export_is_told_from_other_programs_savedmodels(trained_run, tmp_path):
    _, summary = trained_run
    outputs = saved_files.export_outputs(summary["saved_model"], "--hub_module")
    assert outputs["final_avg_pool"] == [-1, 128] and outputs["proj_head_output"] == [-1, 16]
    assert saved_files.num_classes(outputs) == 10
    for name, found in _foreign_savedmodels(tmp_path).items():
        path = str(tmp_path / name)
        with pytest.raises(ValueError) as info:
            saved_files.export_outputs(path, "--hub_module")
        message = str(info.value)
        assert message.startswith(f"--hub_module={path!r} is a SavedModel of another program, "
                                  "not an export of simclr_tf"), message
        assert found in message and "\n" not in message, message
    damaged = str(tmp_path / "damaged")
    shutil.copytree(summary["saved_model"], damaged)
    data = os.path.join(damaged, "variables", "variables.data-00000-of-00001")
    _cut(data)
    with pytest.raises(saved_files.DamagedFileError, match=rf"{data} is cut short"):
        saved_files.export_outputs(damaged, "--hub_module")
    _cut(os.path.join(damaged, "saved_model.pb"))
    with pytest.raises(ValueError, match=r"saved_model.pb cannot be read"):
        saved_files.export_outputs(damaged, "--hub_module")
