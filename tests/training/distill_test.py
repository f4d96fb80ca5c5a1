"""Distillation (SimCLRv2's third stage): the loss against NumPy, the step on one and two
replicas, and a student that learns a fixed teacher's predictions."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import simclr_tf  # noqa: F401
from simclr_tf.cli import flags as cli_flags
from simclr_tf.core import endpoints as ep
from simclr_tf.core.config import Config
from simclr_tf.data import pipeline as data_lib
from simclr_tf.data import sources
from simclr_tf.models import simclr_model as model_lib
from simclr_tf.runs import export as export_lib
from simclr_tf.runs import run_folder
from simclr_tf.training import distill, optim, train
from simclr_tf.training import step as step_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _reference(teacher, student, labels, tau, a):
    """Eq. 3 of the SimCLRv2 paper over one batch, both sums divided by the batch size."""
    p_t = _softmax(teacher / tau)
    log_p_s_tau = np.log(_softmax(student / tau))
    distil = -(p_t * log_p_s_tau).sum(axis=1).mean()
    log_p_s = np.log(_softmax(student))
    rows = [i for i, y in enumerate(labels) if y >= 0]
    label = -sum(log_p_s[i, labels[i]] for i in rows) / len(labels)
    return (1 - a) * label + a * distil, distil, label


@pytest.mark.parametrize("tau,a", [(1.0, 1.0), (0.1, 1.0), (2.0, 0.3), (0.5, 0.0)])
def test_loss_matches_the_papers_equation_in_numpy(tau, a):
    rng = np.random.default_rng(7)
    teacher = rng.normal(0, 3, [12, 5]).astype(np.float32)
    student = rng.normal(0, 3, [12, 5]).astype(np.float32)
    labels = np.array([0, -1, 3, -1, -1, 4, 2, -1, 1, -1, -1, 0], np.int32)
    loss, metrics = distill.compute_losses(teacher, student, labels, tau, a)
    expected, distil, label = _reference(teacher, student, labels, tau, a)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(metrics["distill_loss"]) == pytest.approx(distil, rel=1e-5)
    assert ("label_loss" in metrics) == (a < 1)
    if a < 1:
        assert float(metrics["label_loss"]) == pytest.approx(label, rel=1e-5)
    agree = np.mean(teacher.argmax(1) == student.argmax(1))
    assert float(metrics["teacher_agreement"]) == pytest.approx(agree)


def test_gradient_is_the_difference_of_the_tempered_distributions():
    rng = np.random.default_rng(3)
    teacher = tf.constant(rng.normal(0, 2, [6, 4]), tf.float32)
    student = tf.Variable(rng.normal(0, 2, [6, 4]).astype(np.float32))
    tau = 0.5
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(teacher)
        loss = distill.distillation_loss(teacher, student, tau)
    expected = (_softmax(student.numpy() / tau) - _softmax(teacher.numpy() / tau)) / (tau * 6)
    np.testing.assert_allclose(tape.gradient(loss, student).numpy(), expected, atol=1e-6)
    assert tape.gradient(loss, teacher) is None  # the teacher is fixed
    # With the student equal to the teacher the gradient vanishes: the minimum of L.
    same = distill.distillation_loss(teacher, teacher, tau)
    entropy = -(_softmax(teacher.numpy() / tau) * np.log(_softmax(teacher.numpy() / tau)))
    assert float(same) == pytest.approx(entropy.sum(1).mean(), rel=1e-5)


STUDENT = Config(model_dir="/unused", train_mode="distill", teacher="/unused", dataset="shapes",
                 image_size=16, resnet_depth=18, width_multiplier=0.25, train_batch_size=8,
                 weight_decay=1e-4, global_bn=True, strategy="default", seed=3,
                 distill_temperature=0.5, distill_weight=0.5, optimizer="momentum",
                 calibrate_kernels=False)  # the fixed kernels: numerics compared


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, tiny):
    """A tiny supervised classifier of the built-in data (the teacher) and its export."""
    path = tmp_path_factory.mktemp("teacher")
    cfg = tiny(path, train_mode="finetune", train_steps=60, train_batch_size=32,
               checkpoint_steps=60, learning_rate=0.3, keep_hub_module_max=1)
    summary = train.run(cfg)
    run_folder.write_settings(cfg, str(path / "flags.txt"))  # as the programs do
    return path, summary


def _distill_step(strategy, teacher_dir, weights):
    """One distillation step of the package on a fixed batch: (metrics, weights after)."""
    images = tf.random.stateless_uniform([8, 16, 16, 3], seed=[1, 2])
    labels = tf.constant([0, -1, 2, -1, 4, 5, -1, 7], tf.int32)
    teacher = distill.load_teacher(str(teacher_dir), strategy)
    with strategy.scope():
        # Synchronised batch norm on both (one replica would take the fused kernel, whose
        # rounding differs): the cross-replica logic alone is compared.
        model = model_lib.from_config(STUDENT, 10, strategy, sync_bn=True)
        optimizer = optim.make_optimizer(STUDENT, 0.4)
    model.set_weights(weights)
    replica_step = step_lib.make_replica_step(model, optimizer, STUDENT,
                                              strategy.num_replicas_in_sync, teacher=teacher)
    # Eagerly: tracing the step on two replicas costs more than running it.
    _, metrics = step_lib.run_step(strategy, replica_step,
                                   step_lib.split_batch(strategy, (images, labels)))
    metrics = {k: float(v) for k, v in metrics.items()}
    return metrics, [w.copy() for w in model.get_weights()], teacher, images, labels


def test_step_on_two_replicas_equals_one_and_the_reference(teacher_run, one_replica,
                                                           two_replicas):
    teacher_dir = teacher_run[1]["saved_model"]
    keras.utils.set_random_seed(11)
    weights = model_lib.from_config(STUDENT, 10).get_weights()
    m1, w1, teacher, images, labels = _distill_step(one_replica, teacher_dir, weights)
    m2, w2, _, _, _ = _distill_step(two_replicas, teacher_dir, weights)
    for key in ("loss", "distill_loss", "label_loss", "teacher_agreement"):
        assert m2[key] == pytest.approx(m1[key], rel=1e-5, abs=1e-6), key
    for a, b, w0 in zip(w2, w1, weights):  # the same update (global batch norm on both)
        assert np.linalg.norm((a - w0) - (b - w0)) <= 1e-3 * np.linalg.norm(b - w0) + 1e-7
    assert sum(not np.allclose(a, w0) for a, w0 in zip(w1, weights)) > len(weights) // 2
    # The loss of the step, recomputed: the teacher's logits from its SavedModel, the
    # student's from the same weights in training mode (batch statistics), Eq. 3 in NumPy.
    model = model_lib.from_config(dataclasses.replace(STUDENT, global_bn=False), 10)
    model.set_weights(weights)
    student = model(images, training=True)[ep.LOGITS_SUP].numpy()
    saved = tf.saved_model.load(str(teacher_dir))
    t_logits = saved(images, training=False)[ep.LOGITS_SUP].numpy()
    expected, _, _ = _reference(t_logits, student, labels.numpy(), 0.5, 0.5)
    assert m1["loss"] - m1["weight_decay"] == pytest.approx(expected, rel=1e-4)
    assert len(set(t_logits.argmax(1))) > 1  # the teacher's classes vary


def _predictions(export_dir, images):
    saved = tf.saved_model.load(str(export_dir))
    return saved(images, training=False)[ep.LOGITS_SUP].numpy().argmax(1)


def test_a_student_learns_the_teachers_predictions(tmp_path, tiny, teacher_run):
    teacher_dir, teacher_summary = teacher_run
    student = tiny(tmp_path / "student", train_mode="distill", teacher=str(teacher_dir),
                   train_steps=60, train_batch_size=32, checkpoint_steps=30,
                   learning_rate=0.3, keep_hub_module_max=1, distill_temperature=1.0)
    summary = train.run(student)
    assert summary["global_step"] == 60 and "top1" in summary
    assert {"distill_loss", "teacher_agreement"} <= set(summary)
    images = np.stack([x for x, _ in sources_eval(student)])
    t = _predictions(teacher_summary["saved_model"], images)
    s = _predictions(summary["saved_model"], images)
    agreement = np.mean(s == t)
    # Chance: a student whose predictions were independent of the teacher's, with the same
    # class frequencies.
    k = 10
    chance = np.dot(np.bincount(t, minlength=k), np.bincount(s, minlength=k)) / len(t) ** 2
    assert len(set(t)) >= 3, np.bincount(t)  # the teacher is not a constant
    print(f"student-teacher agreement {agreement:.3f}, chance {chance:.3f}, teacher top-1 "
          f"{teacher_summary['top1']:.3f}, student top-1 {summary['top1']:.3f}")
    assert agreement > chance + 0.15, (agreement, chance)


def sources_eval(cfg):
    source = data_lib.get_source(cfg.dataset, seed=cfg.seed)
    ds = data_lib.build_dataset(source, cfg.eval_split, "eval", 100, cfg.image_size)
    return [(x, y) for images, labels in ds.take(4) for x, y in zip(images.numpy(), labels)]


def test_a_teacher_from_a_run_folder_a_checkpoint_and_an_export_agree(teacher_run,
                                                                      one_replica):
    teacher_dir, summary = teacher_run
    images = tf.random.stateless_uniform([6, 16, 16, 3], seed=[3, 4])
    ckpt = tf.train.latest_checkpoint(str(teacher_dir))
    logits = {}
    for path in (teacher_dir, ckpt, summary["saved_model"]):
        teacher = distill.load_teacher(str(path), one_replica)
        assert teacher.num_classes == 10
        logits[teacher.description.split()[0]] = teacher.logits(images).numpy()
    assert set(logits) == {"checkpoint", "export"}
    np.testing.assert_allclose(logits["checkpoint"], logits["export"], rtol=1e-4, atol=1e-5)


def test_bad_teachers_are_named(tmp_path, tiny, teacher_run):
    teacher_dir, _ = teacher_run
    with pytest.raises(ValueError, match="does not exist"):
        train.run(tiny(tmp_path / "a", train_mode="distill", teacher=str(tmp_path / "none")))
    with pytest.raises(ValueError, match="--teacher"):
        tiny(tmp_path / "b", train_mode="distill").validate()
    rng = np.random.default_rng(0)
    four = sources.ArraySource(
        {s: (rng.integers(0, 255, [40, 16, 16, 3], np.uint8), rng.integers(0, 4, 40))
         for s in ("train", "test")}, num_classes=4)
    with pytest.raises(ValueError, match="predicts 10 classes.*4"):
        train.run(tiny(tmp_path / "c", train_mode="distill", teacher=str(teacher_dir),
                       eval_split="test"), source=four)
    headless = model_lib.from_config(tiny(tmp_path, lineareval_while_pretraining=False), None)
    exported = export_lib.export_model(headless, str(tmp_path / "pretrained_export"))
    with pytest.raises(ValueError, match="no supervised head"):
        train.run(tiny(tmp_path / "d", train_mode="distill", teacher=exported))


def test_simclr_distill_program_with_a_label_subset_resumes(tmp_path, teacher_run, capsys):
    teacher_dir, _ = teacher_run
    model_dir = tmp_path / "student"

    def program(*extra):
        return subprocess.run(
            [sys.executable, "-m", "simclr_tf.cli.distill", "--flagfile=flags/smoke.flags",
             f"--teacher={teacher_dir}", f"--model_dir={model_dir}", "--noknn_monitor",
             "--train_examples_per_class=3", "--distill_weight=0.5",
             "--distill_temperature=0.5", *extra],
            cwd=ROOT, capture_output=True, text=True, timeout=600)

    first = program()
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"distill: teacher checkpoint {teacher_dir}/ckpt-60 (10 classes)" in first.stdout
    assert "distill: 30 labelled examples of 10 classes (3-3 per class), every image " \
        "distilled" in first.stdout
    assert "teacher_agreement" in first.stdout  # the progress line's metric
    flags_txt = (model_dir / "flags.txt").read_text()
    assert "--train_mode=distill" in flags_txt and f"--teacher={teacher_dir}" in flags_txt
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["global_step"] == 4 and summary["train_examples"] == 30
    assert {"top1", "label_loss", "distill_loss", "teacher_agreement"} <= set(summary)
    saved = tf.saved_model.load(summary["saved_model"])  # the student: 10 classes, no head g
    out = saved(tf.zeros([2, 16, 16, 3]), training=False)
    assert out[ep.LOGITS_SUP].shape == (2, 10)
    assert out[ep.PROJ_HEAD_OUTPUT].shape == out[ep.FINAL_AVG_POOL].shape
    # The run's flags.txt gives the same run; two steps more resume from its checkpoint.
    again = train.run(cli_flags.from_flagfile(str(model_dir / "flags.txt"), train_steps=6))
    assert again["global_step"] == 6 and again["train_examples"] == 30
    assert f"resumed from {model_dir}/ckpt-4 at step 4" in capsys.readouterr().out


@pytest.mark.parametrize("overrides,match", [
    (dict(distill_weight=1.5), "--distill_weight=1.5 must be in \\[0, 1\\]"),
    (dict(distill_temperature=0.0), "distill_temperature"),
    (dict(train_label_fraction=0.1), "--distill_weight=1 leaves out"),
    (dict(checkpoint="/x"), "random initialisation"),
    (dict(linear_eval=True), "trains all of its layers"),
    (dict(train_mode="finetune"), "--teacher='/t' is for distillation"),
])
def test_distillation_flags_are_checked(overrides, match):
    cfg = dict(model_dir="/tmp/x", train_mode="distill", teacher="/t")
    with pytest.raises(ValueError, match=match):
        Config(**{**cfg, **overrides}).validate()


def test_a_student_of_unlabelled_images_trains_without_evaluating(tmp_path, tiny, teacher_run):
    from PIL import Image
    rng = np.random.default_rng(0)
    for i in range(24):  # a folder of images without class sub-folders
        Image.fromarray(rng.integers(0, 255, [20, 24, 3], np.uint8)).save(tmp_path / f"{i}.jpg")
    cfg = tiny(tmp_path / "student", train_mode="distill", teacher=str(teacher_run[0]),
               dataset="folder", data_dir=str(tmp_path), train_steps=2)
    summary = train.run(cfg)
    assert summary["global_step"] == 2 and "teacher_agreement" in summary
    assert "top1" not in summary  # nothing to evaluate on
    with pytest.raises(ValueError, match="--distill_weight=0.5 .*needs labelled images"):
        train.run(dataclasses.replace(cfg, distill_weight=0.5))
