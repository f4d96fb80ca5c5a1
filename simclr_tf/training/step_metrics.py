"""Metrics computed from a step's outputs: contrastive accuracy and entropy, top-k accuracy."""

import tensorflow as tf


def contrastive_accuracy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Fraction of anchors whose most similar view-2 is their own positive.

    Args:
      logits: [n, N] view-1-against-view-2 similarities (``losses.nt_xent``).
      labels: [n, N] one-hot positives.
    """
    hits = tf.equal(tf.argmax(logits, axis=1), tf.argmax(labels, axis=1))
    return tf.reduce_mean(tf.cast(hits, tf.float32))


def contrastive_entropy(logits: tf.Tensor) -> tf.Tensor:
    """Mean entropy (nats) of the softmax over each anchor's view-2 similarities."""
    logits = tf.cast(logits, tf.float32)
    log_p = tf.nn.log_softmax(logits, axis=1)
    return tf.reduce_mean(-tf.reduce_sum(tf.exp(log_p) * log_p, axis=1))


def top_k_accuracy(labels: tf.Tensor, logits: tf.Tensor, k: int = 1) -> tf.Tensor:
    """Fraction of rows whose label is among the k largest logits.

    ``labels`` are class indices [B] or one-hot [B, K]. Ties at the k-th value count as hits
    (``tf.math.in_top_k``).
    """
    labels = tf.convert_to_tensor(labels)
    logits = tf.convert_to_tensor(logits)
    if labels.shape.rank == logits.shape.rank:
        labels = tf.argmax(labels, axis=-1)
    hits = tf.math.in_top_k(tf.cast(labels, tf.int32), tf.cast(logits, tf.float32), k)
    return tf.reduce_mean(tf.cast(hits, tf.float32))
