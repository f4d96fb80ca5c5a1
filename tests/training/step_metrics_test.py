"""Contrastive accuracy / entropy and top-k accuracy against NumPy."""

import numpy as np

import simclr_tf  # noqa: F401
from simclr_tf.training import step_metrics


def test_contrastive_accuracy_counts_argmax_agreement():
    logits = np.array([[5.0, 1.0, 0.0], [3.0, 2.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
    labels = np.eye(3, dtype=np.float32)
    # rows 0 and 2 pick their own positive, row 1 does not.
    np.testing.assert_allclose(step_metrics.contrastive_accuracy(logits, labels).numpy(), 2 / 3,
                               rtol=1e-6)


def test_contrastive_entropy_matches_numpy_and_bounds():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 6)).astype(np.float32) * 3
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    expected = np.mean(-(p * np.log(p)).sum(1))
    np.testing.assert_allclose(step_metrics.contrastive_entropy(logits).numpy(), expected,
                               rtol=1e-5)
    np.testing.assert_allclose(step_metrics.contrastive_entropy(np.zeros((3, 8), np.float32)),
                               np.log(8), rtol=1e-6)


def test_top_k_accuracy():
    logits = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]], np.float32)
    labels = np.array([2, 0, 0])
    ranks = [(np.argsort(-row).tolist().index(lab)) for row, lab in zip(logits, labels)]
    for k in (1, 2, 3):
        expected = np.mean([r < k for r in ranks])
        np.testing.assert_allclose(step_metrics.top_k_accuracy(labels, logits, k).numpy(), expected)
        np.testing.assert_allclose(
            step_metrics.top_k_accuracy(np.eye(3)[labels], logits, k).numpy(), expected)
