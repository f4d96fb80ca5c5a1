"""Losses: NT-Xent (the contrastive loss) and the supervised cross-entropy.

NT-Xent keeps the scale of the original implementation, which the published learning rates and
weight decays were tuned with: the mean over the N positive pairs of l(i, j) + l(j, i), that is
twice the paper's L (which averages over all 2N anchors). With every embedding equal it is
2 log(2N - 1).
"""

from typing import Tuple

import tensorflow as tf

# Added to an anchor's similarity with itself so that it never counts as a negative.
LARGE_NUM = 1e9


def _gather(x: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """All replicas' rows of x (concatenated in replica order) and this replica's index."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return x, tf.constant(0, tf.int32)
    replica_id = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
    # all_gather is differentiable: each replica receives the gradient of its own rows.
    return ctx.all_gather(x, axis=0), replica_id


def nt_xent(z1: tf.Tensor, z2: tf.Tensor, temperature: float = 0.1, normalize: bool = True
            ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The normalised temperature-scaled cross-entropy loss of SimCLR.

    Called inside ``strategy.run``, every replica uses its own n pairs as anchors and the
    projections of all replicas (gathered here) as negatives, so the mean of the replicas'
    losses equals the one-device loss on the whole batch.

    Args:
      z1: [n, d] projections of the first views of this replica's images.
      z2: [n, d] projections of the second views, row i the same image as z1's row i.
      temperature: tau in s(u, v) = u.v / (|u| |v| tau).
      normalize: L2-normalise the projections first (the original's ``hidden_norm``); when
        False the similarities are raw dot products over tau.

    Returns:
      ``(loss, logits, labels)``: the scalar loss (mean over this replica's n pairs of
      l(i, j) + l(j, i)); ``logits`` [n, N] the similarities of view 1 against every view 2 in
      the global batch of N images; ``labels`` [n, N] their one-hot positives, so contrastive
      accuracy is the agreement of the argmaxes.
    """
    z1 = tf.convert_to_tensor(z1)
    z2 = tf.convert_to_tensor(z2)
    if z1.shape.rank != 2 or z2.shape.rank != 2:
        raise ValueError(f"z1 and z2 must be [n, d]; got shapes {z1.shape} and {z2.shape}.")
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0.")
    z1 = tf.cast(z1, tf.float32)
    z2 = tf.cast(z2, tf.float32)
    if normalize:
        z1 = tf.math.l2_normalize(z1, axis=-1)
        z2 = tf.math.l2_normalize(z2, axis=-1)
    z1_all, replica_id = _gather(z1)
    z2_all, _ = _gather(z2)
    n = tf.shape(z1)[0]
    big_n = tf.shape(z1_all)[0]
    positives = tf.range(n) + replica_id * n
    labels = tf.one_hot(positives, big_n)
    self_mask = labels * LARGE_NUM

    logits_ab = tf.matmul(z1, z2_all, transpose_b=True) / temperature
    logits_aa = tf.matmul(z1, z1_all, transpose_b=True) / temperature - self_mask
    logits_ba = tf.matmul(z2, z1_all, transpose_b=True) / temperature
    logits_bb = tf.matmul(z2, z2_all, transpose_b=True) / temperature - self_mask

    targets = tf.concat([labels, tf.zeros_like(labels)], axis=1)
    loss_a = tf.nn.softmax_cross_entropy_with_logits(
        targets, tf.concat([logits_ab, logits_aa], axis=1))
    loss_b = tf.nn.softmax_cross_entropy_with_logits(
        targets, tf.concat([logits_ba, logits_bb], axis=1))
    loss = tf.reduce_mean(loss_a + loss_b)
    return loss, logits_ab, labels


def supervised_cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Mean softmax cross-entropy; ``labels`` are class indices [B] or one-hot [B, K]."""
    logits = tf.cast(logits, tf.float32)
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == logits.shape.rank:
        return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(
            tf.cast(labels, tf.float32), logits))
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        tf.cast(labels, tf.int32), logits))
