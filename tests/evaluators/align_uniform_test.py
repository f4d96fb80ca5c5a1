"""The alignment and uniformity evaluator: against a NumPy loop written from Wang and Isola's
definitions on fixed views (one replica and two, several batches), analytic values, and the
shared pretraining run, whose reported figures are recomputed from its final weights on the
same held-out views."""

import itertools
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from simclr_tf.core import endpoints as ep
from simclr_tf.data import augment
from simclr_tf.data import pipeline as data_lib
from simclr_tf.evaluation import running
from simclr_tf.evaluators import align_uniform
from simclr_tf.models import simclr_model as model_lib
from simclr_tf.runs import checkpoints
from simclr_tf.tools import visualize


def numpy_align_uniform(z1_batches, z2_batches, alpha, t):
    """From the definitions, pair by pair: the mean of ||z1_i - z2_i||^alpha over the images,
    and the log of the mean of exp(-t ||z_i - z_j||^2) over the pairs i != j of one batch in
    one view, pooled over the batches and both views."""
    def unit(z):
        z = np.asarray(z, np.float64)
        return z / np.linalg.norm(z, axis=1, keepdims=True)
    aligned, terms = [], []
    for z1, z2 in zip(z1_batches, z2_batches):
        z1, z2 = unit(z1), unit(z2)
        aligned += [np.linalg.norm(a - b) ** alpha for a, b in zip(z1, z2)]
        for z in (z1, z2):
            for i, j in itertools.permutations(range(len(z)), 2):
                terms.append(np.exp(-t * np.sum((z[i] - z[j]) ** 2)))
    return np.mean(aligned), np.log(np.mean(terms))


class _Projections(tf.Module):
    """A stand-in model whose projection of a view is its pixels times a fixed matrix."""

    def __init__(self, size, dim=5, constant=False):
        self.weights = tf.constant(np.random.default_rng(0).normal(size=[size * size * 3, dim]),
                                   tf.float32)
        self.constant = constant

    def __call__(self, images, training=None):
        assert training is False
        views = tf.concat(tf.split(images, 2, axis=-1), axis=0)  # view 1's rows, then view 2's
        flat = tf.reshape(views, [tf.shape(views)[0], -1])
        z = tf.ones_like(flat) @ self.weights if self.constant else flat @ self.weights
        return {ep.PROJ_HEAD_OUTPUT: z}


def _views(n, size=3, seed=1):
    """n fixed pairs of views: view 2 is view 1 plus noise, so the two views align partly."""
    rng = np.random.default_rng(seed)
    first = rng.uniform(size=[n, size, size, 3])
    second = np.clip(first + rng.normal(0, 0.2, first.shape), 0, 1)
    return np.concatenate([first, second], -1).astype(np.float32)


def _evaluator(strategy, views, batch, model, alpha=2.0, t=2.0):
    """The evaluator over ``views`` in global batches of ``batch`` (each replica its share)."""
    views_ds = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((views, np.zeros(len(views), np.int64)))
        .batch(batch, drop_remainder=True))
    return align_uniform.AlignUniform(strategy, model, views_ds, len(views) // batch,
                                      alpha=alpha, t=t)


@pytest.mark.parametrize("replicas", ["one_replica", "two_replicas"])
def test_figures_equal_numpy_on_fixed_views(replicas, request):
    strategy = request.getfixturevalue(replicas)
    views = _views(24)
    model = _Projections(3)
    got = _evaluator(strategy, views, 8, model).evaluate(tf.constant(-1))  # 3 batches of 8
    z = model(tf.constant(views), training=False)[ep.PROJ_HEAD_OUTPUT].numpy()
    z1, z2 = z[:24], z[24:]
    want = numpy_align_uniform(np.split(z1, 3), np.split(z2, 3), 2.0, 2.0)
    assert got["alignment"] == pytest.approx(want[0], rel=1e-5)
    assert got["uniformity"] == pytest.approx(want[1], rel=1e-5)
    assert 0.05 < want[0] < 1.5 and -3.5 < want[1] < -0.3  # neither extreme of either
    # num_steps limits the batches: the first one alone.
    first = numpy_align_uniform([z1[:8]], [z2[:8]], 2.0, 2.0)
    one = _evaluator(strategy, views, 8, model).evaluate(tf.constant(1))
    assert (one["alignment"], one["uniformity"]) == pytest.approx(first, rel=1e-5)


def test_one_point_for_every_view_aligns_perfectly_and_spreads_nothing(one_replica):
    got = _evaluator(one_replica, _views(16), 8, _Projections(3, constant=True)).evaluate(
        tf.constant(-1))
    assert got["alignment"] == pytest.approx(0.0, abs=1e-6)
    assert got["uniformity"] == pytest.approx(0.0, abs=1e-6)  # log of exp(0)


def test_the_options_reach_the_figures(one_replica):
    """alpha = 1 is the mean distance, t = 0.5 a gentler kernel: the NumPy figures of those."""
    views, model = _views(8), _Projections(3)
    got = _evaluator(one_replica, views, 8, model, alpha=1.0, t=0.5).evaluate(tf.constant(-1))
    z = model(tf.constant(views), training=False)[ep.PROJ_HEAD_OUTPUT].numpy()
    want = numpy_align_uniform([z[:8]], [z[8:]], 1.0, 0.5)
    assert (got["alignment"], got["uniformity"]) == pytest.approx(want, rel=1e-5)


def test_pretraining_reports_the_figures_of_its_final_weights(trained_run):
    """The shared run names align_uniform: summary.json and TensorBoard (steps 0, 2, 4) hold
    both figures, and step 4's are those of its final checkpoint on the held-out views."""
    cfg, summary = trained_run
    with open(os.path.join(cfg.model_dir, "summary.json")) as f:
        written = json.load(f)
    scalars = visualize.read_scalars(cfg.model_dir)
    for name in ("alignment", "uniformity"):
        assert set(scalars[f"eval/{name}"]) == {0, 2, 4}
        assert scalars[f"eval/{name}"][4] == pytest.approx(written[name]) == summary[name]
    prefix = checkpoints.resolve(cfg.model_dir)
    assert prefix.endswith("ckpt-4")
    model = model_lib.from_config(cfg, checkpoints.num_classes_in(prefix))
    checkpoints.restore_for_eval(model, prefix)
    run = running.Run(tf.distribute.get_strategy(), model,
                      data_lib.get_source(cfg.dataset, seed=cfg.seed), cfg)
    images, _ = next(iter(run.views_input(cfg.eval_split, cfg.seed)))  # eval_steps=1
    assert cfg.device_blur  # blurred as the training step blurs batch 0 (on one replica)
    images = augment.blur_views(images, cfg.seed, 0, 1)
    z = model(images, training=False)[ep.PROJ_HEAD_OUTPUT].numpy()
    half = len(z) // 2
    want = numpy_align_uniform([z[:half]], [z[half:]], 2.0, 2.0)
    assert summary["alignment"] == pytest.approx(want[0], rel=1e-5)
    assert summary["uniformity"] == pytest.approx(want[1], rel=1e-5)
    # Between the initial and the final weights the figures moved: they follow the weights.
    assert scalars["eval/uniformity"][0] != pytest.approx(summary["uniformity"], rel=1e-3)


def test_the_views_are_blurred_as_the_training_step_blurs_them(one_replica):
    """At 32 px (the blur's kernel is a tenth of the image: none at 16 px), batch k is blurred
    by ``augment.blur_views`` keyed by (seed, k), as step k of training blurs its views."""
    views, model = _views(16, size=32, seed=3), _Projections(32)
    got = _evaluator(one_replica, views, 8, model)
    got.blur_seed = 7
    got = got.evaluate(tf.constant(-1))
    blurred = [augment.blur_views(tf.constant(views[8 * k:8 * k + 8]), 7, k, 1)
               for k in range(2)]
    z = [model(b, training=False)[ep.PROJ_HEAD_OUTPUT].numpy() for b in blurred]
    want = numpy_align_uniform([b[:8] for b in z], [b[8:] for b in z], 2.0, 2.0)
    assert (got["alignment"], got["uniformity"]) == pytest.approx(want, rel=1e-5)
    plain = _evaluator(one_replica, views, 8, model).evaluate(tf.constant(-1))
    assert plain["alignment"] != pytest.approx(got["alignment"], rel=1e-2)  # blur matters
