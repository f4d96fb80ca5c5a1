"""The training programs end to end on tiny models: pretrain, linear eval, fine-tune, eval,
resume, data sources, and the guards."""

import dataclasses
import json
import os
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import PROJECTIONS

import simclr_tf  # noqa: F401
from simclr_tf.core import endpoints as ep
from simclr_tf.data import pipeline as data_lib
from simclr_tf.data import sources
from simclr_tf.evaluation import supervised
from simclr_tf.models import simclr_model as model_lib
from simclr_tf.runs import checkpoints
from simclr_tf.training import losses, run_inputs, train
from simclr_tf.training import trainer as trainer_lib


def _numpy_contrastive(z1, z2, temperature):
    """(NT-Xent, contrastive hits, contrastive entropy) of one step's projections on one
    replica, from the definitions in float64.

    Anchor i of either view has the other view of image i as its positive and every other
    view of the batch as negatives; NT-Xent keeps the original's scale, the mean over the
    pairs of l(i, j) + l(j, i). The hits count the view-1 anchors whose most similar view 2
    is their own; the entropy is the mean over the view-1 anchors of the entropy (nats) of
    the softmax over their view-2 similarities."""
    def unit(z):
        z = np.asarray(z, np.float64)
        return z / np.linalg.norm(z, axis=1, keepdims=True)

    a, b = unit(z1), unit(z2)
    n = len(a)

    def anchor_losses(anchors, others, same_view):
        loss = np.zeros(n)
        for i in range(n):  # candidates: the other view of every image, then the own view's
            s = np.concatenate([others @ anchors[i], np.delete(same_view @ anchors[i], i)])
            s = s / temperature
            loss[i] = np.log(np.sum(np.exp(s))) - s[i]
        return loss

    loss = np.mean(anchor_losses(a, b, a) + anchor_losses(b, a, b))
    logits = a @ b.T / temperature
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    entropy = np.mean(-np.sum(p * np.log(p), axis=1))
    return loss, _top_k_hits(logits, np.arange(n), 1), entropy


def _top_k_hits(logits, labels, k, near=1e-5):
    """(fewest, most) rows whose label is among their k largest logits, counted in NumPy.

    A logit within ``near`` of the label's may be above or below it in the run's float32
    arithmetic (its graph against this eager replay): such a near tie counts either way,
    so the two counts differ only when one decides a row (and are equal otherwise)."""
    logits = np.asarray(logits, np.float64)
    own = logits[np.arange(len(labels)), labels][:, None]
    surely_above = np.sum(logits > own + near, axis=1)
    maybe_above = np.sum(logits > own - near, axis=1) - 1  # the label's own logit is one
    return np.array([np.sum(maybe_above < k), np.sum(surely_above < k)])


def _assert_fraction_of(fraction, total, hits):
    """``fraction`` is a count of ``total`` items, the one ``hits`` = (fewest, most) gives."""
    count = fraction * total
    assert abs(count - round(count)) < 1e-4, (fraction, total)
    assert hits[0] <= round(count) <= hits[1], (fraction, total, hits)


def _eval_batch_hits(model, source, split, batch, image_size=16):
    """(top-1 hits, top-5 hits, examples) of ``model``'s supervised head on the first
    ``batch`` examples of ``split`` in eval mode (centre crop), counted in NumPy."""
    images, labels = next(iter(data_lib.build_dataset(source, split, "eval", batch,
                                                      image_size)))
    logits = model(images, training=False)[ep.LOGITS_SUP].numpy()
    labels = labels.numpy()
    return _top_k_hits(logits, labels, 1), _top_k_hits(logits, labels, 5), len(labels)


def _values(prefix, scope):
    """Checkpoint values under ``scope`` (e.g. 'model/encoder/'), optimizer slots excluded."""
    reader = tf.train.load_checkpoint(prefix)
    return {k: reader.get_tensor(k) for k, _ in tf.train.list_variables(prefix)
            if k.startswith(scope) and "OPTIMIZER_SLOT" not in k}


@pytest.fixture()
def pretrained(trained_run):
    """The shared trained run (conftest): its folder and summary."""
    cfg, summary = trained_run
    return pathlib.Path(cfg.model_dir), summary


def test_pretrain_writes_checkpoints_summaries_and_metrics(pretrained, trained_run):
    model_dir, summary = pretrained
    cfg = trained_run[0]
    assert summary["global_step"] == 4
    for key in ("loss", "contrast_loss", "contrast_acc", "contrast_entropy",
                "supervised_loss", "top1", "top5"):
        assert np.isfinite(summary[key]), key
    # The total is the contrastive loss + the probe's cross-entropy + the head's decay.
    assert summary["loss"] == pytest.approx(
        summary["contrast_loss"] + summary["supervised_loss"] + summary["weight_decay"],
        rel=1e-4)
    # The summary's contrastive figures are the means over the last loop's two steps:
    # recomputed in NumPy from the projections the run's loss received at steps 3 and 4.
    seen = PROJECTIONS[cfg.model_dir]
    assert len(seen) == 4 and all(z1.shape == (8, 16) for z1, _ in seen)  # one per step
    loss, hits, entropy = zip(*(_numpy_contrastive(z1, z2, cfg.temperature)
                                for z1, z2 in seen[2:]))
    assert summary["contrast_loss"] == pytest.approx(np.mean(loss), rel=1e-4)
    _assert_fraction_of(summary["contrast_acc"], 16, sum(hits))  # 2 steps x 8 anchors
    assert summary["contrast_entropy"] == pytest.approx(np.mean(entropy), rel=1e-4)
    # top-1 and top-5 of the probe at step 4, counted in NumPy on the 50 eval images.
    inputs = run_inputs.build_inputs(cfg, tf.distribute.get_strategy())
    model = model_lib.from_config(cfg, inputs.source.info.num_classes)
    checkpoints.restore_for_eval(model, str(model_dir / "ckpt-4"))
    top1, top5, count = _eval_batch_hits(model, inputs.source, cfg.eval_split, 50)
    assert count == 50
    _assert_fraction_of(summary["top1"], 50, top1)
    _assert_fraction_of(summary["top5"], 50, top5)
    assert json.load(open(os.path.join(model_dir, "summary.json"))) == summary
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("ckpt-4")
    assert os.path.exists(os.path.join(model_dir, "ckpt-2.index"))
    events = tf.io.gfile.glob(os.path.join(model_dir, "train", "events.*"))
    assert events


def test_rerun_of_a_finished_run_changes_nothing(trained_run, tmp_path):
    cfg, _ = trained_run
    model_dir = tmp_path / "run"
    shutil.copytree(cfg.model_dir, model_dir)  # the shared run stays as it was
    before = _values(str(model_dir / "ckpt-4"), "model/")
    again = train.run(dataclasses.replace(cfg, model_dir=str(model_dir)))
    assert again["global_step"] == 4
    after = _values(tf.train.latest_checkpoint(str(model_dir)), "model/")
    for k, v in before.items():
        np.testing.assert_array_equal(after[k], v, err_msg=k)


def test_interrupted_run_resumes_from_the_newest_complete_checkpoint(tiny, tmp_path, monkeypatch,
                                                                     capsys):
    calls = {"n": 0}
    original = trainer_lib.Trainer.train_loop_end

    def crash_on_second_loop(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated interruption")
        return original(self)

    monkeypatch.setattr(trainer_lib.Trainer, "train_loop_end", crash_on_second_loop)
    cfg = tiny(tmp_path, lineareval_while_pretraining=False)
    with pytest.raises(KeyboardInterrupt):
        train.run(cfg)
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-2")
    monkeypatch.setattr(trainer_lib.Trainer, "train_loop_end", original)
    capsys.readouterr()
    summary = train.run(cfg)
    assert "resumed from" in capsys.readouterr().out
    assert summary["global_step"] == 4
    assert "top1" not in summary  # no probe, no labels used


def test_linear_eval_keeps_the_encoder_and_head_bit_identical(tiny, pretrained, tmp_path):
    pre_dir, _ = pretrained
    cfg = tiny(tmp_path, train_mode="finetune", checkpoint=str(pre_dir), linear_eval=True,
               optimizer="momentum", learning_rate=0.1, weight_decay=0.0, train_steps=3,
               checkpoint_steps=3, zero_init_logits_layer=True)
    kept = {}
    summary = train.run(cfg, on_end=lambda model: kept.update(model=model))
    assert summary["global_step"] == 3  # a fresh step counter, not the pretraining one
    # The final evaluation (step 3): top-1 and top-5 of the trained head, counted in NumPy.
    source = data_lib.get_source(cfg.dataset, seed=cfg.seed)
    top1, top5, count = _eval_batch_hits(kept["model"], source, cfg.eval_split, 50)
    assert count == 50
    _assert_fraction_of(summary["top1"], 50, top1)
    _assert_fraction_of(summary["top5"], 50, top5)
    pre = str(pre_dir / "ckpt-4")
    post = tf.train.latest_checkpoint(str(tmp_path))
    for scope in ("model/encoder/", "model/projection_head/"):
        pre_values, post_values = _values(pre, scope), _values(post, scope)
        assert pre_values and set(pre_values) == set(post_values)
        for k, v in pre_values.items():  # weights and batch-norm statistics alike
            np.testing.assert_array_equal(post_values[k], v, err_msg=k)
    head = _values(post, "model/supervised_head/")
    assert any(np.abs(v).sum() > 0 for v in head.values())


def test_fine_tune_restores_encoder_only_with_a_fresh_zeroed_head(pretrained):
    pre_dir, _ = pretrained
    model = model_lib.build_model(resnet_depth=18, width_multiplier=0.25, image_size=16,
                                  num_proj_layers=2, proj_out_dim=16, num_classes=3,
                                  mode="finetune", zero_init_logits_layer=True)
    model(tf.zeros([1, 16, 16, 3]))
    prefix = checkpoints.restore_pretrained(model, str(pre_dir))
    saved = _values(prefix, "model/encoder/")
    restored = {v.name: v.numpy() for v in model.encoder.variables}
    assert len(saved) == len(restored)
    # Checkpoint keys and variable names differ: match each restored value to an equal saved
    # one (every saved value used once), whatever the order.
    unmatched = list(saved.values())
    for name, value in restored.items():
        equal = [i for i, a in enumerate(unmatched)
                 if a.shape == value.shape and np.array_equal(a, value)]
        assert equal, f"{name} equals no value of {prefix}"
        unmatched.pop(equal[0])
    # 3 classes although the probe had 10: the head is new, and zero.
    assert model.supervised_head.dense.kernel.shape[-1] == 3
    assert not np.any(model.supervised_head.dense.kernel.numpy())


def test_python_api_fine_tunes_on_numpy_arrays(tiny, pretrained, tmp_path, capsys):
    # Every label is class 2 of 3: the linear head learns it at once, which the built-in
    # data (other labels, other counts) would not give.
    rng = np.random.default_rng(0)
    splits = {name: (rng.integers(0, 256, [n, 20, 20, 3], dtype=np.uint8),
                     np.full([n], 2, np.int32)) for name, n in (("train", 24), ("test", 10))}
    cfg = tiny(tmp_path, train_mode="finetune", checkpoint=str(pretrained[0]),
               linear_eval=True, zero_init_logits_layer=True, eval_split="test",
               train_steps=2, eval_batch_size=10, optimizer="momentum", learning_rate=1.0)
    summary = train.run(cfg, source=sources.ArraySource(splits, num_classes=3))
    assert "finetune: 24 training examples" in capsys.readouterr().out
    assert summary["global_step"] == 2 and summary["top1"] == 1.0


def test_full_fine_tune_and_eval_program(tiny, pretrained, tmp_path):
    pre_dir, _ = pretrained
    cfg = tiny(tmp_path, train_mode="finetune", checkpoint=str(pre_dir), train_steps=2,
               checkpoint_steps=2, optimizer="lars", learning_rate=0.05,
               learning_rate_scaling="sqrt", ft_proj_selector=1)
    summary = train.run(cfg)
    pre_conv = _values(str(pre_dir / "ckpt-4"), "model/encoder/")
    post_conv = _values(tf.train.latest_checkpoint(str(tmp_path)), "model/encoder/")
    changed = [k for k in pre_conv if not np.array_equal(pre_conv[k], post_conv[k])]
    assert changed  # the whole network trains
    result = supervised.evaluate(tiny(tmp_path, train_mode="finetune", ft_proj_selector=1))
    assert result["top1"] == pytest.approx(summary["top1"])
    assert result["checkpoint"].endswith("ckpt-2")


def test_non_finite_loss_stops_with_the_step_and_saves_nothing(tiny, tmp_path, monkeypatch):
    from simclr_tf.losses import nt_xent  # noqa: PLC0415 (the part --loss=nt_xent runs)

    original = nt_xent.nt_xent

    def poisoned(*args, **kwargs):
        loss, logits, labels = original(*args, **kwargs)
        return loss * np.nan, logits, labels

    monkeypatch.setattr(nt_xent, "nt_xent", poisoned)
    with pytest.raises(train.NonFiniteLossError, match="non-finite at step 1"):
        train.run(tiny(tmp_path, use_blur=True))
    assert tf.train.latest_checkpoint(str(tmp_path)) is None


def test_unknown_eval_split_is_named(tiny, tmp_path):
    with pytest.raises(ValueError, match="'tset'"):
        train.run(tiny(tmp_path, eval_split="tset"))


def test_batch_must_divide_across_replicas(tiny, tmp_path, two_replicas):
    with pytest.raises(ValueError, match="train_batch_size=7"):
        train.run(tiny(tmp_path, train_batch_size=7), strategy=two_replicas)


def test_tfds_mock_end_to_end_with_unknown_split_sizes(tiny, tmp_path):
    kept = {}
    with tfds.testing.mock_data(num_examples=24):
        cfg = tiny(tmp_path, dataset="cifar10", eval_split="test", train_steps=0,
                   train_epochs=1, eval_batch_size=8, eval_steps=0, checkpoint_steps=0,
                   checkpoint_epochs=1)
        summary = train.run(cfg, on_end=lambda model: kept.update(model=model))
        # eval_steps=0: the whole mock test split, its 24 images, counted in NumPy.
        top1, _, count = _eval_batch_hits(kept["model"], data_lib.get_source(cfg.dataset),
                                          "test", 24)
    # 24 examples / batch 8: 3 steps per epoch, + 1 as the original counts.
    assert summary["global_step"] == 4
    assert count == 24
    _assert_fraction_of(summary["top1"], 24, top1)
