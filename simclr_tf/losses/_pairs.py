"""What the contrastive losses share: this replica's views against every replica's (gathered
across replicas), their similarities, and the per-anchor reduction of the pairwise losses."""

from __future__ import annotations

from simclr_tf.core import lazy

tf = lazy.load("tensorflow")

# Added to an anchor's similarity with itself so that it never counts as a negative.
LARGE_NUM = 1e9


def gather(x):
    """All replicas' rows of x (concatenated in replica order) and this replica's index."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return x, tf.constant(0, tf.int32)
    replica_id = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
    # all_gather is differentiable: each replica receives the gradient of its own rows.
    return ctx.all_gather(x, axis=0), replica_id


def gathered(z1, z2, normalize: bool):
    """This replica's views as float32 (L2-normalised with ``normalize``), all replicas' views
    and the one-hot positives ``[n, N]``: ``(z1, z2, z1_all, z2_all, positives)``."""
    z1 = tf.convert_to_tensor(z1)
    z2 = tf.convert_to_tensor(z2)
    if z1.shape.rank != 2 or z2.shape.rank != 2:
        raise ValueError(f"z1 and z2 must be [n, d]; got shapes {z1.shape} and {z2.shape}.")
    z1 = tf.cast(z1, tf.float32)
    z2 = tf.cast(z2, tf.float32)
    if normalize:
        z1 = tf.math.l2_normalize(z1, axis=-1)
        z2 = tf.math.l2_normalize(z2, axis=-1)
    z1_all, replica_id = gather(z1)
    z2_all, _ = gather(z2)
    n = tf.shape(z1)[0]
    positives = tf.one_hot(tf.range(n) + replica_id * n, tf.shape(z1_all)[0])
    return z1, z2, z1_all, z2_all, positives


def pair_similarities(z1, z2, normalize: bool):
    """Cosine (or, without ``normalize``, dot-product) similarities of each of this replica's
    anchors with the other view of every image in the global batch, both ways: ``[n, N]``
    each (view 1 against view 2, view 2 against view 1), and the one-hot positives ``[n, N]``."""
    z1, z2, z1_all, z2_all, positives = gathered(z1, z2, normalize)
    return (tf.matmul(z1, z2_all, transpose_b=True), tf.matmul(z2, z1_all, transpose_b=True),
            positives)


def semi_hard(sims, positives):
    """Per anchor (row), the similarity of its semi-hard negative: the most similar negative
    among those less similar than the positive, or, when there is none, the least similar
    negative (the rule of TF's ``triplet_semihard_loss``, in similarities)."""
    positive = tf.reduce_sum(sims * positives, axis=1, keepdims=True)
    negative = positives < 0.5
    easier = tf.logical_and(negative, sims < positive)
    hardest_easier = tf.reduce_max(tf.where(easier, sims, -LARGE_NUM), axis=1)
    easiest = tf.reduce_min(tf.where(negative, sims, LARGE_NUM), axis=1)
    return tf.where(tf.reduce_any(easier, axis=1), hardest_easier, easiest)


def pairwise_loss(z1, z2, normalize, use_semi_hard, per_anchor):
    """The mean over this replica's n pairs of l(1 -> 2) + l(2 -> 1), where
    ``per_anchor(positive [n], negatives [n, N], negative mask [n, N])`` is one direction's
    loss of each anchor; with ``use_semi_hard`` each anchor keeps one negative
    (``semi_hard``). Returns ``(loss, view-1-against-view-2 similarities, positives)``."""
    sims_ab, sims_ba, positives = pair_similarities(z1, z2, normalize)
    total = 0.0
    for sims in (sims_ab, sims_ba):
        positive = tf.reduce_sum(sims * positives, axis=1)
        if use_semi_hard:
            negatives = semi_hard(sims, positives)[:, tf.newaxis]
            mask = tf.ones_like(negatives)
        else:
            negatives, mask = sims, 1.0 - positives
        total += per_anchor(positive, negatives, mask)
    return tf.reduce_mean(total), sims_ab, positives


def masked_mean(values, mask):
    """The mean of each row of ``values`` over the entries ``mask`` keeps."""
    return tf.reduce_sum(values * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
