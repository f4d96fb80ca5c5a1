"""Losses: the contrastive losses of the paper's table 2 (NT-Xent, NT-Logistic, margin triplet)
and the supervised cross-entropy.

NT-Xent keeps the scale of the original implementation, which the published learning rates and
weight decays were tuned with: the mean over the N positive pairs of l(i, j) + l(j, i), that is
twice the paper's L (which averages over all 2N anchors). With every embedding equal it is
2 log(2N - 1).
"""

from typing import Tuple

import tensorflow as tf

from simclr_tf.core import choices

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
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0.")
    z1, z2, z1_all, z2_all, labels = _gathered(z1, z2, normalize)
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


def _gathered(z1, z2, normalize: bool):
    """This replica's views as float32 (L2-normalised with ``normalize``), all replicas' views
    and the one-hot positives ``[n, N]``: ``(z1, z2, z1_all, z2_all, labels)``."""
    z1 = tf.convert_to_tensor(z1)
    z2 = tf.convert_to_tensor(z2)
    if z1.shape.rank != 2 or z2.shape.rank != 2:
        raise ValueError(f"z1 and z2 must be [n, d]; got shapes {z1.shape} and {z2.shape}.")
    z1 = tf.cast(z1, tf.float32)
    z2 = tf.cast(z2, tf.float32)
    if normalize:
        z1 = tf.math.l2_normalize(z1, axis=-1)
        z2 = tf.math.l2_normalize(z2, axis=-1)
    z1_all, replica_id = _gather(z1)
    z2_all, _ = _gather(z2)
    n = tf.shape(z1)[0]
    labels = tf.one_hot(tf.range(n) + replica_id * n, tf.shape(z1_all)[0])
    return z1, z2, z1_all, z2_all, labels


def _pair_similarities(z1, z2, normalize: bool):
    """Cosine (or, without ``normalize``, dot-product) similarities of each of this replica's
    anchors with the other view of every image in the global batch, both ways: ``[n, N]``
    each (view 1 against view 2, view 2 against view 1), and the one-hot positives ``[n, N]``."""
    z1, z2, z1_all, z2_all, labels = _gathered(z1, z2, normalize)
    return (tf.matmul(z1, z2_all, transpose_b=True), tf.matmul(z2, z1_all, transpose_b=True),
            labels)


def _semi_hard(sims: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Per anchor (row), the similarity of its semi-hard negative: the most similar negative
    among those less similar than the positive, or, when there is none, the least similar
    negative (the rule of TF's ``triplet_semihard_loss``, in similarities)."""
    positive = tf.reduce_sum(sims * labels, axis=1, keepdims=True)
    negative = labels < 0.5
    easier = tf.logical_and(negative, sims < positive)
    hardest_easier = tf.reduce_max(tf.where(easier, sims, -LARGE_NUM), axis=1)
    easiest = tf.reduce_min(tf.where(negative, sims, LARGE_NUM), axis=1)
    return tf.where(tf.reduce_any(easier, axis=1), hardest_easier, easiest)


def _pairwise_loss(z1, z2, normalize, semi_hard, per_anchor):
    """The mean over this replica's n pairs of l(1 -> 2) + l(2 -> 1), where
    ``per_anchor(positive [n], negatives [n, N], negative mask [n, N])`` is one direction's
    loss of each anchor; with ``semi_hard`` each anchor keeps one negative (``_semi_hard``).
    Returns ``(loss, view-1-against-view-2 similarities, labels)`` as ``nt_xent`` does."""
    sims_ab, sims_ba, labels = _pair_similarities(z1, z2, normalize)
    total = 0.0
    for sims in (sims_ab, sims_ba):
        positive = tf.reduce_sum(sims * labels, axis=1)
        if semi_hard:
            negatives = _semi_hard(sims, labels)[:, tf.newaxis]
            mask = tf.ones_like(negatives)
        else:
            negatives, mask = sims, 1.0 - labels
        total += per_anchor(positive, negatives, mask)
    return tf.reduce_mean(total), sims_ab, labels


def _masked_mean(values, mask):
    return tf.reduce_sum(values * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)


def nt_logistic(z1: tf.Tensor, z2: tf.Tensor, temperature: float = 0.1,
                normalize: bool = True, semi_hard: bool = False):
    """The paper's NT-Logistic loss: per anchor u with positive v+ and negatives v-,
    -log sigmoid(s(u, v+) / tau) - mean over v- of log sigmoid(-s(u, v-) / tau).

    Anchors are both views of this replica's images; an anchor's negatives are the other view
    of every other image in the global batch (gathered across replicas): the paper's table 2
    takes the negatives of one view only. The negatives' term is their mean, so positives and
    negatives weigh the same (our choice; a plain sum over 2N - 2 negatives swamps the
    positive). With ``semi_hard``, one negative per anchor (``_semi_hard``). Scale and
    returns as ``nt_xent``: the mean over the n pairs of l(i, j) + l(j, i), with ``logits``
    the view-1-against-view-2 similarities over tau.
    """
    choices.check_positive("temperature", temperature, flag=False)

    def per_anchor(positive, negatives, mask):
        return (-tf.math.log_sigmoid(positive / temperature)
                - _masked_mean(tf.math.log_sigmoid(-negatives / temperature), mask))
    loss, sims, labels = _pairwise_loss(z1, z2, normalize, semi_hard, per_anchor)
    return loss, sims / temperature, labels


def margin_triplet(z1: tf.Tensor, z2: tf.Tensor, margin: float = 0.5, normalize: bool = True,
                   semi_hard: bool = False):
    """The paper's margin triplet loss: per anchor u, the mean over its negatives v- of
    max(s(u, v-) - s(u, v+) + m, 0), with s the cosine similarity (``normalize``).

    Anchors and negatives as ``nt_logistic``; with ``semi_hard``, one negative per anchor.
    Returns ``(loss, similarities [n, N], labels)``: the similarities stand for the logits
    of the contrastive metrics (their argmax is the same)."""
    choices.check_positive("margin", margin, flag=False)

    def per_anchor(positive, negatives, mask):
        return _masked_mean(tf.nn.relu(negatives - positive[:, tf.newaxis] + margin), mask)
    return _pairwise_loss(z1, z2, normalize, semi_hard, per_anchor)


def contrastive_loss(z1, z2, name: str, temperature: float, margin: float,
                     normalize: bool = True, semi_hard: bool = False):
    """The contrastive loss ``name`` (one of ``choices.LOSSES``) of the two views."""
    choices.check_choice("loss", name, choices.LOSSES, flag=False)
    if name == "nt_xent":
        if semi_hard:
            raise ValueError("semi_hard=True applies to nt_logistic and margin_triplet; NT-Xent "
                             "weighs every negative by its softmax.")
        return nt_xent(z1, z2, temperature, normalize)
    if name == "nt_logistic":
        return nt_logistic(z1, z2, temperature, normalize, semi_hard)
    return margin_triplet(z1, z2, margin, normalize, semi_hard)


def supervised_cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Mean softmax cross-entropy; ``labels`` are class indices [B] or one-hot [B, K]."""
    logits = tf.cast(logits, tf.float32)
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == logits.shape.rank:
        return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(
            tf.cast(labels, tf.float32), logits))
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        tf.cast(labels, tf.int32), logits))
