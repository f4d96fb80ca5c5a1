"""NT-Logistic and the margin triplet loss (the paper's table 2) against NumPy references
written from their equations, with and without semi-hard negatives, and across one and two
replicas."""

import numpy as np
import pytest
import tensorflow as tf

import simclr_tf  # noqa: F401
from simclr_tf.losses import _pairs
from simclr_tf.training import losses


def _log_sigmoid(x):
    return -np.log1p(np.exp(-x))


def _semi_hard_negative(sims, i):
    """Anchor i's semi-hard negative, looped: the most similar negative below the positive,
    else the least similar negative."""
    negatives = [sims[i, k] for k in range(len(sims)) if k != i]
    below = [s for s in negatives if s < sims[i, i]]
    return max(below) if below else min(negatives)


def reference(z1, z2, kind, tau=0.5, margin=0.5, semi_hard=False):
    """Mean over the n images of l(view 1 anchor) + l(view 2 anchor), in float64 loops."""
    z1 = z1 / np.linalg.norm(z1, axis=1, keepdims=True)
    z2 = z2 / np.linalg.norm(z2, axis=1, keepdims=True)
    n, total = len(z1), 0.0
    for a, b in ((z1, z2), (z2, z1)):
        sims = a.astype(np.float64) @ b.astype(np.float64).T
        for i in range(n):
            pos = sims[i, i]
            negs = ([_semi_hard_negative(sims, i)] if semi_hard
                    else [sims[i, k] for k in range(n) if k != i])
            if kind == "nt_logistic":
                total += -_log_sigmoid(pos / tau) - np.mean([_log_sigmoid(-s / tau)
                                                             for s in negs])
            else:
                total += np.mean([max(s - pos + margin, 0.0) for s in negs])
    return total / n


def _call(kind, z1, z2, semi_hard, tau=0.5, margin=0.5):
    return losses.contrastive_loss(z1, z2, kind, tau, margin, semi_hard=semi_hard)


@pytest.mark.parametrize("kind", ["nt_logistic", "margin_triplet"])
@pytest.mark.parametrize("semi_hard", [False, True])
@pytest.mark.parametrize("n,d", [(2, 3), (7, 16)])
def test_matches_numpy_reference(kind, semi_hard, n, d):
    rng = np.random.default_rng(n + d)
    z1, z2 = rng.normal(size=(2, n, d)).astype(np.float32)
    loss, logits, labels = _call(kind, z1, z2, semi_hard)
    np.testing.assert_allclose(loss.numpy(), reference(z1, z2, kind, semi_hard=semi_hard),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels.numpy(), np.eye(n))
    zn1 = z1 / np.linalg.norm(z1, axis=1, keepdims=True)
    zn2 = z2 / np.linalg.norm(z2, axis=1, keepdims=True)
    scale = 0.5 if kind == "nt_logistic" else 1.0  # logits are similarities over tau
    np.testing.assert_allclose(logits.numpy(), zn1 @ zn2.T / scale, rtol=1e-5, atol=1e-6)


def test_analytic_values():
    # Orthogonal views, every image its own axis: positives s = 1, negatives s = 0.
    z = np.eye(4, dtype=np.float32)
    logistic = losses.nt_logistic(z, z, temperature=0.5)[0].numpy()
    np.testing.assert_allclose(logistic, 2 * (np.log1p(np.exp(-2.0)) + np.log(2.0)), rtol=1e-6)
    # Triplet: every negative is below the positive by 1 > margin 0.5: no loss; margin 1.5
    # leaves 0.5 per negative, twice (both views).
    assert losses.margin_triplet(z, z, margin=0.5)[0].numpy() == 0.0
    np.testing.assert_allclose(losses.margin_triplet(z, z, margin=1.5)[0].numpy(), 1.0,
                               rtol=1e-6)


def test_semi_hard_picks_the_negative_the_rule_names():
    # Anchor 0 (view 1) has similarities to the view-2 rows 0.9 (positive), 0.95, 0.5, 0.2:
    # the semi-hard negative is 0.5 (the most similar one below 0.9), not 0.95.
    sims = tf.constant([[0.9, 0.95, 0.5, 0.2]])
    labels = tf.constant([[1.0, 0.0, 0.0, 0.0]])
    assert _pairs.semi_hard(sims, labels).numpy()[0] == pytest.approx(0.5)
    # None below the positive: the least similar negative.
    sims = tf.constant([[0.1, 0.95, 0.5, 0.2]])
    assert _pairs.semi_hard(sims, labels).numpy()[0] == pytest.approx(0.2)


def test_bad_values_are_named():
    z = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="loss='nce'.*nt_xent, nt_logistic, margin_triplet"):
        losses.contrastive_loss(z, z, "nce", 0.1, 0.5)
    with pytest.raises(ValueError, match="margin=0"):
        losses.margin_triplet(z, z, margin=0.0)
    with pytest.raises(ValueError, match="semi_hard=True applies"):
        losses.contrastive_loss(z, z, "nt_xent", 0.1, 0.5, semi_hard=True)
    from simclr_tf.core import config as config_lib  # noqa: PLC0415
    with pytest.raises(ValueError, match="--semi_hard_negatives applies to --loss=nt_logistic"):
        config_lib.Config(model_dir="x", semi_hard_negatives=True).validate()
    with pytest.raises(ValueError, match="--loss='triplet' is not supported"):
        config_lib.Config(model_dir="x", loss="triplet").validate()


@pytest.mark.parametrize("kind", ["nt_logistic", "margin_triplet"])
@pytest.mark.parametrize("semi_hard", [False, True])
def test_two_replicas_equal_one_device(two_replicas, kind, semi_hard):
    rng = np.random.default_rng(5)
    z1, z2 = rng.normal(size=(2, 6, 4)).astype(np.float32)
    z1_t, z2_t = tf.constant(z1), tf.constant(z2)
    with tf.GradientTape() as tape:
        tape.watch([z1_t, z2_t])
        full = _call(kind, z1_t, z2_t, semi_hard)[0]
    full_g1, full_g2 = tape.gradient(full, [z1_t, z2_t])

    def step(pair):
        a, b = pair
        with tf.GradientTape() as tape:
            tape.watch([a, b])
            loss = _call(kind, a, b, semi_hard)[0]
            share = loss / 2  # each replica's share of the mean over replicas
        return (loss,) + tuple(tape.gradient(share, [a, b]))

    def halves(ctx):
        i = ctx.replica_id_in_sync_group
        return tf.constant(z1[3 * i:3 * i + 3]), tf.constant(z2[3 * i:3 * i + 3])

    inputs = two_replicas.experimental_distribute_values_from_function(halves)
    out = tf.function(lambda x: two_replicas.run(step, args=(x,)))(inputs)
    loss, g1, g2 = [np.concatenate([np.atleast_1d(t.numpy()) for t in
                                    two_replicas.experimental_local_results(o)]) for o in out]
    np.testing.assert_allclose(loss.mean(), full.numpy(), rtol=1e-5)
    np.testing.assert_allclose(g1, full_g1.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(g2, full_g2.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind,semi_hard", [("nt_logistic", True), ("margin_triplet", False)])
def test_the_step_uses_the_configured_loss(kind, semi_hard):
    import dataclasses  # noqa: PLC0415

    from simclr_tf.core import config as config_lib  # noqa: PLC0415
    from simclr_tf.core import endpoints as ep  # noqa: PLC0415
    from simclr_tf.training import step  # noqa: PLC0415

    cfg = dataclasses.replace(config_lib.Config(model_dir="unused"), loss=kind,
                              temperature=0.3, triplet_margin=0.7,
                              semi_hard_negatives=semi_hard).validate()
    z = np.random.default_rng(9).normal(size=(10, 6)).astype(np.float32)
    _, metrics = step.compute_losses({ep.PROJ_HEAD_OUTPUT: tf.constant(z)},
                                     tf.zeros([5], tf.int32), cfg)
    want = reference(z[:5], z[5:], kind, tau=0.3, margin=0.7, semi_hard=semi_hard)
    np.testing.assert_allclose(metrics["contrast_loss"].numpy(), want, rtol=1e-5)
