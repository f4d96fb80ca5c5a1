"""NT-Xent against a naive NumPy reference written from the paper's equation, and across
one and two replicas."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

import simclr_tf  # noqa: F401
from simclr_tf.training import losses


def reference_nt_xent(z1, z2, tau, normalize=True):
    """Sum over all 2N anchors of l(i, j), divided by N (the original's 2L scale)."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    if normalize:
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        sims = np.array([z[i] @ z[k] / tau for k in range(2 * n)])
        denom = sum(np.exp(sims[k]) for k in range(2 * n) if k != i)
        total += -np.log(np.exp(sims[j]) / denom)
    return total / n


@pytest.mark.parametrize("n,d,tau", list(itertools.product([1, 3, 8], [2, 16], [0.1, 0.5, 1.0])))
def test_matches_numpy_reference(n, d, tau):
    rng = np.random.default_rng(n * 100 + d)
    z1 = rng.normal(size=(n, d)).astype(np.float32)
    z2 = rng.normal(size=(n, d)).astype(np.float32)
    loss, logits, labels = losses.nt_xent(z1, z2, tau)
    np.testing.assert_allclose(loss.numpy(), reference_nt_xent(z1, z2, tau), rtol=2e-5,
                               atol=2e-5)
    assert logits.shape == (n, n) and labels.shape == (n, n)
    zn1 = z1 / np.linalg.norm(z1, axis=1, keepdims=True)
    zn2 = z2 / np.linalg.norm(z2, axis=1, keepdims=True)
    np.testing.assert_allclose(logits.numpy(), zn1 @ zn2.T / tau, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(labels.numpy(), np.eye(n))


def test_without_normalisation_matches_reference():
    rng = np.random.default_rng(7)
    z1 = rng.normal(size=(5, 4)).astype(np.float32) * 0.3
    z2 = rng.normal(size=(5, 4)).astype(np.float32) * 0.3
    loss, logits, _ = losses.nt_xent(z1, z2, 0.5, normalize=False)
    np.testing.assert_allclose(loss.numpy(), reference_nt_xent(z1, z2, 0.5, normalize=False),
                               rtol=1e-5)
    np.testing.assert_allclose(logits.numpy(), z1 @ z2.T / 0.5, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [2, 5, 4096])
def test_all_equal_embeddings_give_2_log_2n_minus_1(n):
    z = np.ones((n, 2), np.float32)
    loss, _, _ = losses.nt_xent(z, z, 0.1)
    np.testing.assert_allclose(loss.numpy(), 2 * np.log(2 * n - 1), rtol=1e-5)
    if n == 4096:  # docs/method.md worked value
        assert round(float(loss), 2) == 18.02


def test_symmetric_in_the_two_views():
    rng = np.random.default_rng(3)
    z1, z2 = rng.normal(size=(2, 6, 8)).astype(np.float32)
    a = losses.nt_xent(z1, z2, 0.2)[0].numpy()
    b = losses.nt_xent(z2, z1, 0.2)[0].numpy()
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_scale_invariant_when_normalised():
    rng = np.random.default_rng(4)
    z1, z2 = rng.normal(size=(2, 6, 8)).astype(np.float32)
    a = losses.nt_xent(z1, z2, 0.2)[0].numpy()
    b = losses.nt_xent(3 * z1, 0.5 * z2, 0.2)[0].numpy()
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="temperature=0"):
        losses.nt_xent(np.ones((2, 3), np.float32), np.ones((2, 3), np.float32), 0.0)
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        losses.nt_xent(np.ones((2,), np.float32), np.ones((2,), np.float32), 0.1)


def _per_replica(strategy, z1, z2, tau):
    """Loss, logits, labels and gradients of each replica on its half of the batch."""
    n = len(z1) // strategy.num_replicas_in_sync

    def step(ctx_inputs):
        a, b = ctx_inputs
        with tf.GradientTape() as tape:
            tape.watch([a, b])
            loss, logits, labels = losses.nt_xent(a, b, tau)
            scaled = loss / strategy.num_replicas_in_sync
        ga, gb = tape.gradient(scaled, [a, b])
        return loss, logits, labels, ga, gb

    def value_fn(ctx):
        i = ctx.replica_id_in_sync_group
        return (tf.constant(z1[i * n:(i + 1) * n]), tf.constant(z2[i * n:(i + 1) * n]))

    inputs = strategy.experimental_distribute_values_from_function(value_fn)
    out = tf.function(lambda x: strategy.run(step, args=(x,)))(inputs)
    return [[t.numpy() for t in strategy.experimental_local_results(o)] for o in out]


def test_two_replicas_equal_one_device(two_replicas):
    rng = np.random.default_rng(11)
    z1, z2 = rng.normal(size=(2, 8, 5)).astype(np.float32)
    tau = 0.3
    z1_t, z2_t = tf.constant(z1), tf.constant(z2)
    with tf.GradientTape() as tape:
        tape.watch([z1_t, z2_t])
        full_loss, full_logits, full_labels = losses.nt_xent(z1_t, z2_t, tau)
    full_g1, full_g2 = tape.gradient(full_loss, [z1_t, z2_t])

    r_loss, r_logits, r_labels, r_g1, r_g2 = _per_replica(two_replicas, z1, z2, tau)
    np.testing.assert_allclose(np.mean(r_loss), full_loss.numpy(), rtol=1e-5)
    # Each replica's anchors see the whole global batch as negatives.
    np.testing.assert_allclose(np.concatenate(r_logits), full_logits.numpy(), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(np.concatenate(r_labels), full_labels.numpy())
    # The gradient with respect to each replica's rows (summed over replicas through
    # all_gather) equals the one-device gradient.
    np.testing.assert_allclose(np.concatenate(r_g1), full_g1.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.concatenate(r_g2), full_g2.numpy(), rtol=1e-4, atol=1e-6)


def test_one_replica_strategy_equals_plain_call(one_replica):
    rng = np.random.default_rng(12)
    z1, z2 = rng.normal(size=(2, 6, 4)).astype(np.float32)
    r_loss, *_ = _per_replica(one_replica, z1, z2, 0.5)
    np.testing.assert_allclose(r_loss[0], reference_nt_xent(z1, z2, 0.5), rtol=1e-5)


def test_supervised_cross_entropy_int_and_one_hot():
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], np.float32)
    labels = np.array([0, 1])
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = -np.mean(np.log(p[np.arange(2), labels]))
    np.testing.assert_allclose(losses.supervised_cross_entropy(labels, logits).numpy(),
                               expected, rtol=1e-6)
    np.testing.assert_allclose(
        losses.supervised_cross_entropy(np.eye(3)[labels], logits).numpy(), expected, rtol=1e-6)
