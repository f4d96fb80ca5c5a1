"""The paper's NT-Logistic loss (``--loss=nt_logistic``, table 2): per anchor u with positive
v+ and negatives v-, -log sigmoid(s(u, v+) / tau) - mean over v- of log sigmoid(-s(u, v-) / tau).

Anchors are both views of this replica's images; an anchor's negatives are the other view of
every other image in the global batch (gathered across replicas): the paper's table 2 takes
the negatives of one view only. The negatives' term is their mean, so positives and negatives
weigh the same (our choice; a plain sum over 2N - 2 negatives swamps the positive). With
``--semi_hard_negatives``, one negative per anchor (``_pairs.semi_hard``). Scale as NT-Xent:
the mean over the n pairs of l(i, j) + l(j, i).
"""

from __future__ import annotations

from simclr_tf.core import choices, lazy
from simclr_tf.losses import HIDDEN_NORM, SEMI_HARD, TEMPERATURE, _pairs

tf = lazy.load("tensorflow")

OPTIONS = (TEMPERATURE, HIDDEN_NORM, SEMI_HARD)


def loss(z1, z2, labels, temperature: float, hidden_norm: bool, semi_hard_negatives: bool):
    """The part's entry point (``simclr_tf.losses``): ``nt_logistic``; labels are not used."""
    del labels
    return nt_logistic(z1, z2, temperature, hidden_norm, semi_hard_negatives)


def nt_logistic(z1, z2, temperature: float = 0.1, normalize: bool = True,
                semi_hard: bool = False):
    """The loss of the module doc. Returns ``(loss, logits, labels)`` as NT-Xent does, with
    ``logits`` the view-1-against-view-2 similarities over tau."""
    choices.check_positive("temperature", temperature, flag=False)

    def per_anchor(positive, negatives, mask):
        return (-tf.math.log_sigmoid(positive / temperature)
                - _pairs.masked_mean(tf.math.log_sigmoid(-negatives / temperature), mask))
    value, sims, labels = _pairs.pairwise_loss(z1, z2, normalize, semi_hard, per_anchor)
    return value, sims / temperature, labels
