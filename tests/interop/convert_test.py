"""Converting the original SimCLR tf2 code's training checkpoints (convert.py).

The checkpoints are written with exactly the original's keys (tests/fixtures/original_layouts,
measured by running the original), channel counts scaled down to keep the tests small, and
seeded values; the converted model must give the endpoints of an independent forward pass
written from the original's definition (tests/original_model.py).
"""

import dataclasses
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import original_model
import original_structure
import pytest
import tensorflow as tf
from conftest import ORIGINAL_R18

import simclr_tf  # noqa: F401
from simclr_tf.core.config import Config
from simclr_tf.interop import convert, original_savedmodel
from simclr_tf.models import simclr_model as model_lib
from simclr_tf.runs import checkpoints

CASES = {  # listing, channel scale, the architecture it must be read as
    "r18_cifar": ("r18_cifar", 0.25, dict(resnet_depth=18, width_multiplier=0.25,
                                          sk_ratio=0.0, cifar_stem=True, num_proj_layers=3,
                                          proj_out_dim=32, num_classes=10)),
    "r50_1x": ("r50_1x_sk0", 1 / 16, dict(resnet_depth=50, width_multiplier=1 / 16,
                                          sk_ratio=0.0, cifar_stem=False, num_proj_layers=3,
                                          proj_out_dim=8, num_classes=1000)),
    "r50_1x_sk": ("r50_1x_sk1", 1 / 16, dict(resnet_depth=50, width_multiplier=1 / 16,
                                             sk_ratio=0.0625, cifar_stem=False,
                                             num_proj_layers=3, proj_out_dim=8,
                                             num_classes=1000)),
    "r50_2x": ("r50_2x_sk0", 1 / 16, dict(resnet_depth=50, width_multiplier=2 / 16,
                                          sk_ratio=0.0, cifar_stem=False, num_proj_layers=3,
                                          proj_out_dim=8, num_classes=1000)),
}
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BLOCKS = {18: ("basic", (2, 2, 2, 2)), 50: ("bottleneck", (3, 4, 6, 3))}


def _assert_close(got, want, name):
    """Within 1e-4 of ``want``, relative to its scale."""
    scale = max(float(np.abs(want).max()), 1.0)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4 * scale,
                               rtol=1e-4, err_msg=name)


def _assert_endpoints(got, want):
    """Every compared endpoint within 1e-4 of the original's (relative to its scale)."""
    for name in ("block_group1", "block_group4", "final_avg_pool", "proj_head_output",
                 "logits_sup"):
        _assert_close(got[name], want[name], name)


def _model(arch, size):
    model = model_lib.build_model(
        resnet_depth=arch.resnet_depth, width_multiplier=arch.width_multiplier,
        sk_ratio=arch.sk_ratio, image_size=size, proj_head_mode=arch.proj_head_mode,
        num_proj_layers=arch.num_proj_layers, proj_out_dim=arch.proj_out_dim,
        num_classes=arch.num_classes, mode="finetune")
    model(tf.zeros([1, size, size, 3]), training=False)
    return model


@pytest.mark.parametrize("case", list(CASES))
def test_converted_checkpoint_gives_the_original_endpoints(case, tmp_path):
    listing, scale, expected = CASES[case]
    values = original_model.values_for(original_model.layout(listing, scale), seed=1)
    prefix = original_model.write_checkpoint(str(tmp_path), values, step=7)
    original = convert.OriginalCheckpoint(prefix)
    assert set(original.shapes) == set(values)  # the written keys are the listing's
    arch = original.architecture()
    assert dataclasses_dict(arch) == expected
    assert original.step == 7
    size = 32 if arch.cifar_stem else 64
    model = _model(arch, size)
    unused = convert.fill(model, original, sk=arch.sk_ratio > 0)
    assert unused == []  # every variable of the original went somewhere
    images = np.random.default_rng(2).uniform(size=[2, size, size, 3]).astype(np.float32)
    kind, blocks = BLOCKS[arch.resnet_depth]
    want = original_model.forward(values, images, blocks, kind, arch.sk_ratio > 0,
                                  arch.cifar_stem)
    _assert_endpoints(model(images, training=False, return_endpoints=True), want)


def dataclasses_dict(arch):
    import dataclasses  # noqa: PLC0415

    return dataclasses.asdict(arch)


def test_a_variable_the_original_lacks_is_named(tmp_path):
    values = original_model.values_for(original_model.layout("r18_cifar", 0.25))
    del values["model/resnet_model/block_groups/2/layers/1/conv2d_bn_layers/3/bn/gamma"]
    original = convert.OriginalCheckpoint(original_model.write_checkpoint(str(tmp_path), values))
    model = _model(original.architecture(), 32)
    with pytest.raises(ValueError, match="block_groups/2/layers/1/conv2d_bn_layers/3/bn/gamma"):
        convert.fill(model, original, sk=False)


def test_a_checkpoint_of_something_else_is_named(tmp_path):
    prefix = tf.train.Checkpoint(v=tf.Variable(1.0)).write(str(tmp_path / "ckpt-1"))
    with pytest.raises(ValueError, match="is not a checkpoint of the original SimCLR tf2"):
        convert.OriginalCheckpoint(prefix).architecture()


@pytest.fixture(scope="module")
def r18_original(tmp_path_factory):
    """An original-layout ResNet-18 CIFAR checkpoint (width 0.25) and its values."""
    values = original_model.values_for(original_model.layout("r18_cifar", 0.25), seed=4)
    directory = tmp_path_factory.mktemp("original")
    return original_model.write_checkpoint(str(directory), values, step=9), values


def test_an_original_checkpoint_cut_short_or_a_text_file_is_named(r18_original, tmp_path):
    prefix, _ = r18_original
    for path in tf.io.gfile.glob(prefix + ".*"):
        shutil.copy(path, tmp_path)
    copy = str(tmp_path / os.path.basename(prefix))
    (data,) = tf.io.gfile.glob(copy + ".data-*")
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) - 100)  # its last tensor's end
    with pytest.raises(ValueError, match=rf"^--original={re.escape(repr(copy))}: "
                                         rf"{re.escape(data)} is cut short"):
        convert.open_original(copy)
    with pytest.raises(ValueError, match=rf"^--original={re.escape(repr(data))} is a binary "
                                         r"file of [\d,]+ bytes, not a model of the original"):
        convert.open_original(data)


def test_simclr_convert_makes_a_run_that_the_programs_and_the_colab_snippet_read(
        r18_original, tmp_path):
    prefix, values = r18_original
    out = tmp_path / "converted"
    proc = subprocess.run(
        [sys.executable, "-m", "simclr_tf.cli.convert", f"--original={os.path.dirname(prefix)}",
         f"--model_dir={out}", "--dataset=cifar10", "--eval_split=test"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ResNet-18 x0.25, CIFAR stem, 3-layer projection head to 32, 10-class " \
        "supervised head" in proc.stdout, proc.stdout
    assert "left: step counters (1)" in proc.stdout, proc.stdout
    flags_txt = (out / "flags.txt").read_text()
    for line in ("--resnet_depth=18", "--width_multiplier=0.25", "--image_size=32",
                 "--dataset=cifar10", "--num_proj_layers=3", "--proj_out_dim=32"):
        assert line in flags_txt.splitlines(), line
    # The original README's linear-eval snippet, on the export: its features are the
    # original's forward pass.
    images = np.random.default_rng(5).uniform(size=[2, 32, 32, 3]).astype(np.float32)
    hub = tf.saved_model.load(str(out / "saved_model" / "9"))
    features = hub(images, trainable=False)["final_avg_pool"]
    want = original_model.forward(values, images, (2, 2, 2, 2), "basic", False, True)
    np.testing.assert_allclose(features.numpy(), want["final_avg_pool"].numpy(),
                               rtol=1e-4, atol=1e-4)
    # simclr-finetune --checkpoint=OUT reads the encoder from it.
    cfg = Config(model_dir=str(tmp_path / "ft"), train_mode="finetune", resnet_depth=18,
                 width_multiplier=0.25, image_size=32, num_proj_layers=3, proj_out_dim=32)
    model = model_lib.from_config(cfg, 10)
    checkpoints.restore_pretrained(model, str(out))
    np.testing.assert_allclose(model(images, training=False)["proj_head_output"].numpy(),
                               want["proj_head_output"].numpy(), rtol=1e-4, atol=1e-4)


def test_flags_that_disagree_with_the_checkpoint_and_a_used_folder_are_named(
        r18_original, tmp_path):
    prefix, _ = r18_original
    cfg = Config(model_dir=str(tmp_path / "out"), resnet_depth=50, width_multiplier=0.25)
    with pytest.raises(ValueError, match=r"--resnet_depth=50 \(the checkpoint holds 18: "
                       r"model/resnet_model/block_groups/0..3 hold 18's blocks\)"):
        convert.convert_checkpoint(prefix, cfg, {"resnet_depth"})
    stem = r"model/resnet_model/initial_conv_relu_max_pool/0/conv2d/kernel is \[3, 3, 3, 16\]"
    with pytest.raises(ValueError, match=rf"--width_multiplier=0.5 \(the checkpoint holds "
                       rf"0.25: {stem}\); --image_size=224 \(the checkpoint has the CIFAR "
                       rf"stem, for images <= 32 px: {stem}\)"):
        convert.convert_checkpoint(prefix, dataclasses.replace(cfg, width_multiplier=0.5),
                                   {"image_size", "width_multiplier"})
    with pytest.raises(ValueError, match=r"--sk_ratio=0.0625 \(the checkpoint holds 0.0: no "
                       r"selective-kernel .*--num_proj_layers=2 \(the checkpoint holds 3: "
                       r"model/_projection_head/linear_layers/2/dense/kernel is \[\d+, 32\]"):
        convert.convert_checkpoint(prefix, dataclasses.replace(
            cfg, resnet_depth=18, sk_ratio=0.0625, num_proj_layers=2),
            {"sk_ratio", "num_proj_layers"})
    used = tmp_path / "used"
    tf.train.Checkpoint(v=tf.Variable(1.0)).save(str(used / "ckpt"))
    with pytest.raises(ValueError, match="already holds a run's checkpoints"):
        convert.convert_checkpoint(prefix, Config(model_dir=str(used)))
    with pytest.raises(ValueError, match="does not exist"):
        convert.convert_checkpoint(str(tmp_path / "nowhere"), Config(model_dir=str(used)))


def test_a_conversion_that_fails_leaves_no_folder_behind(r18_original, tmp_path, monkeypatch):
    prefix, _ = r18_original

    def fails(*args):
        raise ValueError("a variable does not fit")

    monkeypatch.setattr(convert, "_fill_all", fails)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="does not fit"):
        convert.convert_checkpoint(prefix, Config(model_dir=str(out)))
    assert not out.exists()


SAVEDMODEL_CASES = {  # case -> (the CASES entry, projection head, trainable_variables_list)
    "r18_cifar": ("r18_cifar", True, True),
    "r50_1x": ("r50_1x", True, True),
    "r50_1x_sk": ("r50_1x_sk", True, True),
    "r50_2x": ("r50_2x", True, True),
    # The published models' form (converted from TF1, saved with an empty
    # trainable_variables_list), here a SimCLRv1 one: no projection head.
    "r50_1x_v1": ("r50_1x", False, False),
}


def _architecture(expected):
    return tuple(expected[k] for k in ("resnet_depth", "width_multiplier", "sk_ratio",
                                       "cifar_stem", "num_classes", "num_proj_layers",
                                       "proj_out_dim"))


def _original_savedmodel(case, directory):
    """(folder as published, SavedModel path, values, expected architecture, the original's
    model) of a case."""
    base, head, listed = SAVEDMODEL_CASES[case]
    listing, scale, expected = CASES[base]
    if not head:
        expected = dict(expected, num_proj_layers=0, proj_out_dim=0)
    folder = os.path.join(directory, listing)  # e.g. r50_1x_sk1/saved_model/, as published
    path, values, model = original_structure.write_savedmodel(
        folder, listing, scale, _architecture(expected), seed=3, trainable_variables=listed)
    return folder, path, values, expected, model


@pytest.mark.parametrize("case", list(SAVEDMODEL_CASES))
def test_a_savedmodel_written_by_the_original_converts(case, tmp_path, request):
    # Written with the original's own object structure (tests/original_structure.py), so
    # each variable is stored where the original stores it.
    if case == "r18_cifar":  # the session's (conftest.ORIGINAL_R18 is this case)
        folder, path, values, written = request.getfixturevalue("original_r18_savedmodel")
        expected = CASES["r18_cifar"][2]
        assert ORIGINAL_R18[0] == _architecture(expected)
    else:
        folder, path, values, expected, written = _original_savedmodel(case, str(tmp_path))
    original = convert.open_original(folder)  # the published folder as downloaded
    assert original.prefix == path
    assert dataclasses_dict(original.architecture()) == expected
    stored_in_list = any(k.startswith("trainable_variables_list/")
                         for k in original.stored.values())
    assert stored_in_list == SAVEDMODEL_CASES[case][2]
    # The layers' own paths and the positions in their variables lists (by the original's
    # layer order and Keras names) find the same stored variable for every key.
    assert original_savedmodel.OriginalSavedModel(path, by_position=True).stored == \
        original.stored
    size = 32 if expected["cifar_stem"] else 64
    model = convert.load_original(path, image_size=size)  # the Python API, for notebooks
    images = np.random.default_rng(6).uniform(size=[2, size, size, 3]).astype(np.float32)
    kind, blocks = BLOCKS[expected["resnet_depth"]]
    want = original_model.forward(values, images, blocks, kind, expected["sk_ratio"] > 0,
                                  expected["cifar_stem"])
    original_out = written(images, training=False)  # the original's own forward pass
    for name in original_out:
        _assert_close(original_out[name], want[name], name)
    _assert_endpoints(model(images, training=False, return_endpoints=True), want)


def test_the_written_savedmodel_is_the_original_s_layout_key_for_key(tmp_path):
    # ResNet-18, CIFAR stem, at the listing's own width: every key of its training checkpoint
    # and of its SavedModel with its shape, and the Keras name and shape of every SavedModel
    # position, as measured by running the original.
    _, expected = CASES["r18_cifar"][1:]
    path, _, model = original_structure.write_savedmodel(
        str(tmp_path), "r18_cifar", 1.0,
        _architecture(dict(expected, width_multiplier=1.0, proj_out_dim=128)))
    # Its training checkpoint too (the listing's first section, but the optimizer's slots):
    # the layout tests/original_model.write_checkpoint writes.
    prefix = tf.train.Checkpoint(model=model, global_step=tf.Variable(1, dtype=tf.int64)).write(
        str(tmp_path / "ckpt-1"))
    written = {k[:-len(original_model.VALUE)]: shape for k, shape in
               tf.train.list_variables(prefix) if k.startswith("model/")}
    assert written == original_model.layout("r18_cifar")
    stored = {k: str(list(s)) for k, s in tf.train.list_variables(
        os.path.join(path, "variables", "variables"))}
    assert stored == dict(original_model.listing_section("r18_cifar", "SavedModel variables"))
    names = original_structure.variable_names(path)
    listed = {p: (n.split(":")[0], s) for p, rest in original_model.listing_section(
        "r18_cifar", "SavedModel object-graph") for n, s in [rest.split(" ", 1)]}
    assert {p: names[p] for p in listed} == listed


def test_simclr_convert_of_a_savedmodel_feeds_the_programs(original_r18_savedmodel, tmp_path):
    # As simclr-convert runs it; then the original's Colab snippet on both SavedModels, and
    # what simclr-finetune --checkpoint=OUT and --hub_module=OUT/saved_model/0 start from.
    folder, path, values, _ = original_r18_savedmodel
    # The original's own run folder holds its exports as saved_model/<step>: the newest.
    run = tmp_path / "original_run" / "saved_model"
    for step in ("2", "10"):
        shutil.copytree(path, run / step)
    assert convert.open_original(str(run.parent)).prefix == str(run / "10")
    out = str(tmp_path / "out")
    result = convert.convert_checkpoint(folder, Config(model_dir=out))
    assert result["checkpoint"].endswith("ckpt-0")
    images = np.random.default_rng(7).uniform(size=[2, 32, 32, 3]).astype(np.float32)
    want = original_model.forward(values, images, (2, 2, 2, 2), "basic", False, True)
    original_out = tf.saved_model.load(path)(images, trainable=False)
    converted_out = tf.saved_model.load(result["saved_model"])(images, trainable=False)
    for name in ("final_avg_pool", "logits_sup", "proj_head_output"):
        _assert_close(original_out[name], want[name], name)
        _assert_close(converted_out[name], original_out[name], name)
    cfg = dataclasses.replace(result["config"], model_dir=str(tmp_path / "ft"),
                              linear_eval=True)
    model = model_lib.from_config(cfg, 10)
    checkpoints.restore_pretrained(model, out)
    _assert_close(model(images, training=False)["final_avg_pool"], want["final_avg_pool"],
                  "--checkpoint")
    hub = model_lib.from_config(dataclasses.replace(
        cfg, checkpoint=None, hub_module=result["saved_model"], ft_proj_selector=0), 10)
    _assert_close(hub(images, training=False)["final_avg_pool"], want["final_avg_pool"],
                  "--hub_module")
