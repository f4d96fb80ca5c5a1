"""The losses of a training step: the run's contrastive loss (a part of ``simclr_tf.losses``,
found by ``--loss``) and the supervised cross-entropy.

``of_config`` is what the step calls; ``contrastive_loss`` is the same by name and the options
of the paper's three losses as Python arguments. NT-Xent, NT-Logistic and the margin triplet
loss are importable from here too (``losses.nt_xent``).
"""

from typing import Dict, Optional

import tensorflow as tf

from simclr_tf.core import parts
from simclr_tf.losses.margin_triplet import margin_triplet  # noqa: F401
from simclr_tf.losses.nt_logistic import nt_logistic  # noqa: F401
from simclr_tf.losses.nt_xent import nt_xent  # noqa: F401


def needs_labels(name: str) -> bool:
    """Whether the contrastive loss ``name`` reads the images' labels."""
    return bool(getattr(parts.find("loss", name), "NEEDS_LABELS", False))


# The lookup imports modules (importlib), which autograph must not try to convert; the losses
# are graph code as written (docs/extending.md), so nothing below is converted.
@tf.autograph.experimental.do_not_convert
def apply(name: str, z1, z2, labels: Optional[tf.Tensor], values: Dict[str, object],
          flag: bool = True):
    """The contrastive loss ``name`` of the two views with option ``values`` (a name the part
    does not declare is left out): ``(loss, logits [n, N], positives [n, N])``."""
    part = parts.find("loss", name, flag)
    taken = {o.name: values.get(o.name, o.default) for o in parts.declared(part)}
    if getattr(part, "NEEDS_LABELS", False) and labels is None:
        raise ValueError(f"--loss={name} needs the images' labels, and this input has none.")
    return part.loss(z1, z2, labels, **taken)


@tf.autograph.experimental.do_not_convert
def of_config(z1, z2, labels: Optional[tf.Tensor], cfg):
    """The run's contrastive loss: ``cfg.loss`` with the options ``cfg`` holds."""
    part = parts.find("loss", cfg.loss)
    return apply(cfg.loss, z1, z2, labels, parts.values_for(part, cfg))


def contrastive_loss(z1, z2, name: str, temperature: float, margin: float,
                     normalize: bool = True, semi_hard: bool = False, labels=None):
    """The contrastive loss ``name`` of the two views, its options as Python arguments."""
    part = parts.find("loss", name, flag=False)
    if semi_hard and "semi_hard_negatives" not in {o.name for o in parts.declared(part)}:
        raise ValueError(f"semi_hard=True applies to nt_logistic and margin_triplet; {name} "
                         "does not take it.")
    return apply(name, z1, z2, labels, {"temperature": temperature, "triplet_margin": margin,
                                        "hidden_norm": normalize,
                                        "semi_hard_negatives": semi_hard}, flag=False)


def supervised_cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Mean softmax cross-entropy; ``labels`` are class indices [B] or one-hot [B, K]."""
    logits = tf.cast(logits, tf.float32)
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == logits.shape.rank:
        return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(
            tf.cast(labels, tf.float32), logits))
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        tf.cast(labels, tf.int32), logits))
