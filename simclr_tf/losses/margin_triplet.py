"""The paper's margin triplet loss (``--loss=margin_triplet``, table 2): per anchor u, the mean
over its negatives v- of max(s(u, v-) - s(u, v+) + m, 0), with s the cosine similarity.

Anchors and negatives as NT-Logistic's (``nt_logistic``); with ``--semi_hard_negatives``, one
negative per anchor. The similarities stand for the logits of the contrastive metrics (their
argmax is the same).
"""

from __future__ import annotations

from simclr_tf.core import choices, lazy, options
from simclr_tf.losses import HIDDEN_NORM, SEMI_HARD, _pairs

tf = lazy.load("tensorflow")

MARGIN = options.Option("triplet_margin", 0.5, "m of the margin triplet loss, in cosine "
                        "similarity.", check=options.positive("triplet_margin"))
OPTIONS = (MARGIN, HIDDEN_NORM, SEMI_HARD)


def loss(z1, z2, labels, triplet_margin: float, hidden_norm: bool,
         semi_hard_negatives: bool):
    """The part's entry point (``simclr_tf.losses``): ``margin_triplet``; labels are not
    used."""
    del labels
    return margin_triplet(z1, z2, triplet_margin, hidden_norm, semi_hard_negatives)


def margin_triplet(z1, z2, margin: float = 0.5, normalize: bool = True,
                   semi_hard: bool = False):
    """The loss of the module doc: ``(loss, similarities [n, N], labels)``."""
    choices.check_positive("margin", margin, flag=False)

    def per_anchor(positive, negatives, mask):
        return _pairs.masked_mean(tf.nn.relu(negatives - positive[:, tf.newaxis] + margin),
                                  mask)
    return _pairs.pairwise_loss(z1, z2, normalize, semi_hard, per_anchor)
