"""NT-Xent, SimCLR's normalised temperature-scaled cross-entropy (``--loss=nt_xent``, the
default).

It keeps the scale of the original implementation, which the published learning rates and
weight decays were tuned with: the mean over the N positive pairs of l(i, j) + l(j, i), that is
twice the paper's L (which averages over all 2N anchors). With every embedding equal it is
2 log(2N - 1).
"""

from __future__ import annotations

from simclr_tf.core import lazy
from simclr_tf.losses import HIDDEN_NORM, TEMPERATURE, _pairs

tf = lazy.load("tensorflow")

OPTIONS = (TEMPERATURE, HIDDEN_NORM)


def loss(z1, z2, labels, temperature: float, hidden_norm: bool):
    """The part's entry point (``simclr_tf.losses``): ``nt_xent``; labels are not used."""
    del labels
    return nt_xent(z1, z2, temperature, hidden_norm)


def nt_xent(z1, z2, temperature: float = 0.1, normalize: bool = True):
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
    z1, z2, z1_all, z2_all, labels = _pairs.gathered(z1, z2, normalize)
    self_mask = labels * _pairs.LARGE_NUM

    logits_ab = tf.matmul(z1, z2_all, transpose_b=True) / temperature
    logits_aa = tf.matmul(z1, z1_all, transpose_b=True) / temperature - self_mask
    logits_ba = tf.matmul(z2, z1_all, transpose_b=True) / temperature
    logits_bb = tf.matmul(z2, z2_all, transpose_b=True) / temperature - self_mask

    targets = tf.concat([labels, tf.zeros_like(labels)], axis=1)
    loss_a = tf.nn.softmax_cross_entropy_with_logits(
        targets, tf.concat([logits_ab, logits_aa], axis=1))
    loss_b = tf.nn.softmax_cross_entropy_with_logits(
        targets, tf.concat([logits_ba, logits_bb], axis=1))
    return tf.reduce_mean(loss_a + loss_b), logits_ab, labels
