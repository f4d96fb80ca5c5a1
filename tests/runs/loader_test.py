"""runs.loader: a model from an export, a run folder or a checkpoint prefix, tried on a run
folder as an earlier version wrote it (tests/fixtures/runs_0.1.0/pretrain: ckpt-2, flags.txt,
saved_model/2); every way gives the same model."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from simclr_tf.core import endpoints as ep
from simclr_tf.runs import loader

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN = os.path.join(ROOT, "tests", "fixtures", "runs_0.1.0", "pretrain")


@pytest.fixture()
def run(tmp_path):
    shutil.copytree(RUN, tmp_path / "pretrain")
    return tmp_path / "pretrain"


def _outputs(loaded):
    images = tf.random.stateless_uniform([3, 16, 16, 3], seed=[2, 9])
    return {k: loaded.endpoints(images)[k].numpy()
            for k in (ep.FINAL_AVG_POOL, ep.PROJ_HEAD_OUTPUT, ep.LOGITS_SUP)}


def test_every_way_to_name_a_model_gives_the_same_one(run):
    by_export = loader.load(str(run / "saved_model" / "2"), "--hub_module")
    by_run = loader.load(str(run), "--teacher")
    by_prefix = loader.load(str(run / "ckpt-2"), "--teacher")
    assert by_export.description.startswith("export ")
    assert by_run.description == by_prefix.description == f"checkpoint {run}/ckpt-2"
    for loaded in (by_export, by_run, by_prefix):
        assert loaded.num_classes == 10  # the probe's head
        assert (loaded.settings.resnet_depth, loaded.settings.width_multiplier) == (18, 0.0625)
    expected = _outputs(by_export)
    for loaded in (by_run, by_prefix):
        for name, value in _outputs(loaded).items():
            np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-5, err_msg=name)


def test_a_run_without_checkpoints_gives_its_newest_export(run):
    for name in os.listdir(run):
        if name.startswith("ckpt-") or name == "checkpoint":
            os.remove(run / name)
    loaded = loader.load(str(run), "--teacher")
    assert loaded.description == f"export {run}/saved_model/2"


def test_what_cannot_be_loaded_is_named(run, tmp_path):
    with pytest.raises(ValueError, match=r"--teacher='.*nowhere' does not exist"):
        loader.load(str(tmp_path / "nowhere"), "--teacher")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no export .* and no checkpoint"):
        loader.load(str(tmp_path / "empty"), "--hub_module")
    os.remove(run / "flags.txt")
    with pytest.raises(ValueError, match="without its run's flags.txt"):
        loader.load(str(run / "ckpt-2"), "--teacher")
