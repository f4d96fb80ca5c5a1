"""The supervised contrastive loss (--loss=supcon) against a NumPy loop written from its
equation (Khosla et al. 2020, L_out), on one replica and two."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from simclr_tf.core import config as config_lib
from simclr_tf.core import endpoints as ep
from simclr_tf.data import sources
from simclr_tf.losses import supcon
from simclr_tf.training import losses, run_inputs, step


def reference(z1, z2, labels, tau, normalize=True):
    """The sum over the 2N anchors of l_i, over N (NT-Xent's scale), in float64 loops."""
    views = np.concatenate([z1, z2]).astype(np.float64)
    if normalize:
        views /= np.linalg.norm(views, axis=1, keepdims=True)
    classes = np.concatenate([labels, labels])
    total = 0.0
    for i in range(len(views)):
        others = [a for a in range(len(views)) if a != i]
        denominator = sum(np.exp(views[i] @ views[a] / tau) for a in others)
        positives = [p for p in others if classes[p] == classes[i]]
        total -= np.mean([np.log(np.exp(views[i] @ views[p] / tau) / denominator)
                          for p in positives])
    return total / len(z1)


def _batch(seed=3, n=6, d=5):
    z1, z2 = np.random.default_rng(seed).normal(size=(2, n, d)).astype(np.float32)
    return z1, z2, np.array([0, 1, 0, 2, 1, 0], np.int32)[:n]


@pytest.mark.parametrize("normalize", [True, False])
def test_matches_the_equation(normalize):
    z1, z2, labels = _batch()
    loss, logits, positives = supcon.supcon(z1, z2, labels, 0.3, normalize)
    np.testing.assert_allclose(loss.numpy(), reference(z1, z2, labels, 0.3, normalize),
                               rtol=1e-5)
    want = z1 @ z2.T
    if normalize:
        want = want / np.outer(np.linalg.norm(z1, axis=1), np.linalg.norm(z2, axis=1))
    np.testing.assert_allclose(logits.numpy(), want / 0.3, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(positives.numpy(), np.eye(6))


def test_every_image_its_own_class_is_nt_xent():
    z1, z2, _ = _batch(seed=8)
    got = supcon.supcon(z1, z2, np.arange(6), 0.2)[0].numpy()
    np.testing.assert_allclose(got, losses.nt_xent(z1, z2, 0.2)[0].numpy(), rtol=1e-6)


def test_two_replicas_equal_one_device_and_the_equation(two_replicas):
    z1, z2, labels = _batch(seed=5)
    a, b = tf.constant(z1), tf.constant(z2)
    with tf.GradientTape() as tape:
        tape.watch([a, b])
        full = supcon.supcon(a, b, labels, 0.5)[0]
    want_grads = tape.gradient(full, [a, b])

    def replica(pair):
        x, y, c = pair
        with tf.GradientTape() as tape:
            tape.watch([x, y])
            value = supcon.supcon(x, y, c, 0.5)[0]
            share = value / 2  # each replica's share of the mean over replicas
        return (value,) + tuple(tape.gradient(share, [x, y]))

    def halves(ctx):
        i = ctx.replica_id_in_sync_group
        return (tf.constant(z1[3 * i:3 * i + 3]), tf.constant(z2[3 * i:3 * i + 3]),
                tf.constant(labels[3 * i:3 * i + 3]))

    inputs = two_replicas.experimental_distribute_values_from_function(halves)
    out = tf.function(lambda x: two_replicas.run(replica, args=(x,)))(inputs)
    value, g1, g2 = [np.concatenate([np.atleast_1d(t.numpy()) for t in
                                     two_replicas.experimental_local_results(o)]) for o in out]
    np.testing.assert_allclose(value.mean(), reference(z1, z2, labels, 0.5), rtol=1e-5)
    np.testing.assert_allclose(g1, want_grads[0].numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(g2, want_grads[1].numpy(), rtol=1e-4, atol=1e-6)


def test_labels_reach_the_contrastive_loss_only_with_supcon():
    # Pretraining's contrastive loss sees no labels (NT-Xent: equal under other labels);
    # SupCon is the stated exception.
    z = np.random.default_rng(9).normal(size=(12, 4)).astype(np.float32)
    outputs = {ep.PROJ_HEAD_OUTPUT: tf.constant(z)}
    some, others = tf.constant([0, 1, 0, 2, 1, 0]), tf.constant([1, 1, 2, 2, 0, 0])
    for name, differ in (("nt_xent", False), ("supcon", True)):
        cfg = config_lib.Config(model_dir="unused", loss=name).validate()
        a = step.compute_losses(outputs, some, cfg)[1]["contrast_loss"].numpy()
        b = step.compute_losses(outputs, others, cfg)[1]["contrast_loss"].numpy()
        assert (a != b) == differ, (name, a, b)
    # the step's figure (the last cfg: supcon at the default temperature) is the equation's
    np.testing.assert_allclose(a, reference(z[:6], z[6:], some.numpy(), 0.1), rtol=1e-5)


def test_refused_in_one_line_on_unlabelled_images_and_with_semi_hard_negatives():
    images = np.zeros((4, 8, 8, 3), np.uint8)
    unlabelled = sources.ArraySource({"train": (images, np.zeros(4))}, num_classes=0)
    cfg = config_lib.Config(model_dir="unused", loss="supcon", dataset="arrays").validate()
    with pytest.raises(ValueError, match=r"^--loss=supcon \(its positives are the images of "
                                         r"a class\) needs labelled images"):
        run_inputs.training_source(cfg, unlabelled)
    with pytest.raises(ValueError, match="--semi_hard_negatives applies to --loss=nt_logistic "
                                         "or margin_triplet; --loss=supcon does not take it"):
        dataclasses.replace(cfg, semi_hard_negatives=True).validate()
