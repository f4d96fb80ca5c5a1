"""The supervised contrastive loss (``--loss=supcon``; Khosla et al., NeurIPS 2020, their
L_out): the positives of an anchor are all the other views of its class in the global batch,
not only its own other view. The one loss that puts labels into pretraining.

Over the 2N views of the global batch (negatives and positives gathered across replicas),
anchor i with similarities s (cosine, over tau), positives P(i) (the views of i's class but i)
and A(i) every view but i:

    l_i = -1/|P(i)| sum over p in P(i) of log( exp(s_ip) / sum over a in A(i) of exp(s_ia) ).

The loss keeps NT-Xent's scale: the sum over this replica's 2n anchors over n, so that with
every image of its own class it equals NT-Xent (to float rounding).
"""

from __future__ import annotations

from simclr_tf.core import choices, lazy
from simclr_tf.losses import HIDDEN_NORM, TEMPERATURE, _pairs

tf = lazy.load("tensorflow")

OPTIONS = (TEMPERATURE, HIDDEN_NORM)
NEEDS_LABELS = True


def loss(z1, z2, labels, temperature: float, hidden_norm: bool):
    """The part's entry point (``simclr_tf.losses``): ``supcon``."""
    return supcon(z1, z2, labels, temperature, hidden_norm)


def supcon(z1, z2, labels, temperature: float = 0.1, normalize: bool = True):
    """The loss of the module doc, ``labels`` [n] the classes of this replica's images.

    Returns ``(loss, logits, positives)`` as NT-Xent does: ``logits`` [n, N] view 1 of this
    replica's images against view 2 of every image, ``positives`` their one-hot own pairs."""
    choices.check_positive("temperature", temperature, flag=False)
    z1, z2, z1_all, z2_all, positives = _pairs.gathered(z1, z2, normalize)
    classes = tf.reshape(tf.cast(labels, tf.int32), [-1])
    classes_all, _ = _pairs.gather(classes)
    anchors = tf.concat([z1, z2], axis=0)  # [2n, d]
    views = tf.concat([z1_all, z2_all], axis=0)  # [2N, d]
    logits = tf.matmul(anchors, views, transpose_b=True) / temperature  # [2n, 2N]
    nothing = tf.zeros_like(positives)
    itself = tf.concat([tf.concat([positives, nothing], 1),
                        tf.concat([nothing, positives], 1)], axis=0)  # each anchor's column
    anchor_classes = tf.concat([classes, classes], axis=0)
    view_classes = tf.concat([classes_all, classes_all], axis=0)
    same = tf.cast(tf.equal(anchor_classes[:, None], view_classes[None, :]), tf.float32)
    same = same * (1.0 - itself)
    masked = logits - itself * _pairs.LARGE_NUM
    log_prob = masked - tf.reduce_logsumexp(masked, axis=1, keepdims=True)
    per_anchor = -tf.reduce_sum(same * log_prob, axis=1) / tf.reduce_sum(same, axis=1)
    n = tf.cast(tf.shape(z1)[0], tf.float32)
    n_all = tf.shape(z1_all)[0]
    return tf.reduce_sum(per_anchor) / n, logits[:tf.shape(z1)[0], n_all:], positives
