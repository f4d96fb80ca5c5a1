"""The contrastive losses, one module each, found by ``--loss=NAME`` (``core.parts``).

A loss module defines

- ``loss(z1, z2, labels, **options)`` -> ``(loss, logits, positives)``: ``z1``, ``z2`` the
  [n, d] projections of this replica's two views (row i of each the same image); ``labels``
  the [n] int classes of the images, or None when the source has none; ``options`` the values
  of its ``OPTIONS``. ``loss`` is the scalar of this replica (the mean of the replicas' losses
  is the loss of the global batch); ``logits`` [n, N] scores view 1 of this replica's images
  against view 2 of every image of the global batch of N, and ``positives`` [n, N] is one-hot
  where each row's own other view is, so the contrastive metrics (accuracy, entropy) read them.
  Called inside ``strategy.run``: negatives from other replicas come through
  ``_pairs.gathered``.
- ``OPTIONS``: the ``options.Option``s it takes (flags of the programs); shared ones below.
- ``NEEDS_LABELS = True`` when it uses ``labels`` (pretraining then refuses an unlabelled
  source in one line).

The top of a loss module imports no TensorFlow (``core.lazy``): flags and ``--help`` read the
declarations. docs/extending.md walks through adding one.
"""

from simclr_tf.core import options

# The paper's table 2 in its order; other losses follow by name.
ORDER = ("nt_xent", "nt_logistic", "margin_triplet")

TEMPERATURE = options.Option("temperature", 0.1, "tau: the similarities are divided by it.",
                             check=options.positive("temperature"))
HIDDEN_NORM = options.Option("hidden_norm", True, "L2-normalise the projections before the "
                             "contrastive loss (cosine similarities; dot products without).")
SEMI_HARD = options.Option(
    "semi_hard_negatives", False, "One semi-hard negative per anchor (the most similar "
    "negative less similar than the positive) instead of all of them.", exclusive=True)
