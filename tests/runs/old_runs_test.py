"""Runs written by an earlier version (tests/fixtures/runs_0.1.0, from before the package moved
into sub-packages) still load: their flags.txt, checkpoints and export."""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from simclr_tf.core import endpoints as ep
from simclr_tf.evaluation import supervised
from simclr_tf.models import simclr_model as model_lib
from simclr_tf.runs import checkpoints, run_folder
from simclr_tf.training import train

OLD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures",
                   "runs_0.1.0")


@pytest.fixture()
def old_runs(tmp_path):
    """The old run folders copied (the test must not write into tests/fixtures), and the run
    settings each recorded, pointed at the copies."""
    shutil.copytree(OLD, tmp_path, dirs_exist_ok=True)
    settings = {}
    for name in ("pretrain", "linear"):
        cfg = run_folder.read_settings(str(tmp_path / name / "flags.txt"))
        settings[name] = dataclasses.replace(
            cfg, model_dir=str(tmp_path / name),
            checkpoint=str(tmp_path / "pretrain") if cfg.checkpoint else None)
    return tmp_path, settings


def _summary(folder):
    with open(os.path.join(folder, "summary.json")) as f:
        return json.load(f)


def test_an_old_linear_eval_scores_as_it_did(old_runs):
    folder, settings = old_runs
    result = supervised.evaluate(settings["linear"])
    recorded = _summary(folder / "linear")
    assert result["checkpoint"].endswith("ckpt-2") and recorded["global_step"] == 2
    for name in ("top1", "top5"):
        assert result[name] == pytest.approx(recorded[name], abs=1e-6), name


def test_an_old_export_equals_its_checkpoint_in_todays_model(old_runs):
    folder, settings = old_runs
    cfg = settings["pretrain"]
    prefix = checkpoints.resolve(cfg.model_dir)
    model = model_lib.from_config(dataclasses.replace(cfg, train_mode="finetune"),
                                  checkpoints.num_classes_in(prefix))
    checkpoints.restore_for_eval(model, prefix)
    images = tf.random.stateless_uniform([3, 16, 16, 3], seed=[5, 1])
    expected = model(images, training=False, return_endpoints=True)
    loaded = tf.saved_model.load(str(folder / "pretrain" / "saved_model" / "2"))
    outputs = loaded(images, training=False)
    for name in (ep.FINAL_AVG_POOL, ep.PROJ_HEAD_OUTPUT, ep.LOGITS_SUP):
        np.testing.assert_allclose(outputs[name].numpy(), expected[name].numpy(), rtol=1e-5,
                                   atol=1e-5, err_msg=name)


def test_an_old_pretraining_run_resumes(old_runs):
    folder, settings = old_runs
    cfg = dataclasses.replace(settings["pretrain"], train_steps=3, keep_hub_module_max=0)
    before = tf.train.load_variable(str(folder / "pretrain" / "ckpt-2"),
                                    "optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE")
    summary = train.run(cfg)
    assert before == 2 and summary["global_step"] == 3
    assert tf.train.latest_checkpoint(cfg.model_dir).endswith("ckpt-3")
