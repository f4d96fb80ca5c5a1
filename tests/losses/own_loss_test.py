"""A user's own contrastive loss, without editing the package: a module named by its path
(``--loss=my_project.my_loss``) or an object registered from a notebook cell."""

import json
import types

import numpy as np
import pytest
import tensorflow as tf

from simclr_tf.core import config as config_lib
from simclr_tf.core import endpoints as ep
from simclr_tf.core import parts
from simclr_tf.runs import run_folder
from simclr_tf.training import step, train

# An alignment-only loss (Wang and Isola's l_align with alpha = 2), as a user would write it.
OWN_LOSS = '''
import tensorflow as tf


def loss(z1, z2, labels):
    z1, z2 = tf.math.l2_normalize(z1, -1), tf.math.l2_normalize(z2, -1)
    value = tf.reduce_mean(tf.reduce_sum(tf.square(z1 - z2), -1))
    return value, tf.matmul(z1, z2, transpose_b=True), tf.eye(tf.shape(z1)[0])
'''


# A loss no built-in one could give: a constant (its gradient is nothing but zeros).
CONSTANT_LOSS = '''
import tensorflow as tf


def loss(z1, z2, labels):
    value = 7.25 + 0.0 * tf.reduce_sum(z1 * z2)
    return value, tf.matmul(z1, z2, transpose_b=True), tf.eye(tf.shape(z1)[0])
'''


def _alignment(z1, z2):
    z1 = z1 / np.linalg.norm(z1, axis=1, keepdims=True)
    z2 = z2 / np.linalg.norm(z2, axis=1, keepdims=True)
    return np.mean(np.sum((z1 - z2) ** 2, axis=1))


@pytest.fixture
def own_module(user_package):
    user_package("my_project", {"align_loss": OWN_LOSS, "not_a_loss": "VALUE = 1\n",
                                "constant_loss": CONSTANT_LOSS})
    return "my_project.align_loss"


def _contrast_loss(cfg, z):
    outputs = {ep.PROJ_HEAD_OUTPUT: tf.constant(z)}
    return float(step.compute_losses(outputs, tf.zeros([len(z) // 2], tf.int32),
                                     cfg)[1]["contrast_loss"])


def test_a_module_path_is_the_loss_of_the_step(own_module):
    z = np.random.default_rng(2).normal(size=(8, 5)).astype(np.float32)
    cfg = config_lib.Config(model_dir="unused", loss=own_module).validate()
    assert _contrast_loss(cfg, z) == pytest.approx(_alignment(z[:4], z[4:]), rel=1e-5)


def test_a_registered_object_is_the_loss_of_the_step(monkeypatch):
    monkeypatch.setattr(parts, "_REGISTERED", {kind: {} for kind in parts.KINDS})

    def cell_loss(z1, z2, labels):  # what a notebook cell defines
        value = tf.reduce_mean(tf.reduce_sum(z1 * z2, -1))
        return value, tf.matmul(z1, z2, transpose_b=True), tf.eye(tf.shape(z1)[0])

    parts.register("loss", "dot", types.SimpleNamespace(loss=cell_loss))
    assert "dot" in parts.names("loss")
    z = np.random.default_rng(4).normal(size=(6, 3)).astype(np.float32)
    cfg = config_lib.Config(model_dir="unused", loss="dot").validate()
    assert _contrast_loss(cfg, z) == pytest.approx(np.mean(np.sum(z[:3] * z[3:], 1)),
                                                   rel=1e-5)
    with pytest.raises(ValueError, match="'nt_xent' is a built-in loss"):
        parts.register("loss", "nt_xent", types.SimpleNamespace(loss=cell_loss))
    with pytest.raises(ValueError, match=r"loss 'bad': .* defines no loss\(\) function"):
        parts.register("loss", "bad", types.SimpleNamespace(lose=cell_loss))


def test_a_run_s_flags_txt_keeps_the_module_path(own_module, tmp_path):
    cfg = config_lib.Config(model_dir=str(tmp_path), loss=own_module)
    run_folder.write_settings(cfg, str(tmp_path / "flags.txt"))
    assert f"--loss={own_module}" in (tmp_path / "flags.txt").read_text().splitlines()
    assert run_folder.read_settings(str(tmp_path / "flags.txt")).validate().loss == own_module


def test_bad_names_are_refused_in_one_line(own_module):
    cases = {"my_project.not_a_loss": r"--loss='my_project\.not_a_loss': .* defines no "
                                      r"loss\(\) function",
             "my_project.missing": r"--loss='my_project\.missing': no module of that path",
             "ntxent": r"--loss='ntxent' is not supported; use one of nt_xent, nt_logistic, "
                       r"margin_triplet"}
    for name, message in cases.items():
        with pytest.raises(ValueError, match=message) as info:
            config_lib.Config(model_dir="unused", loss=name).validate()
        assert "\n" not in str(info.value)


def test_pretraining_runs_with_its_own_loss(own_module, tiny, tmp_path):
    name = "my_project.constant_loss"
    cfg = tiny(tmp_path, loss=name, train_steps=2, lineareval_while_pretraining=False)
    train.run(cfg)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["contrast_loss"] == pytest.approx(7.25, rel=1e-6)
