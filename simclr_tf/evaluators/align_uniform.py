"""``--evaluators=align_uniform``: the alignment and uniformity of the normalised projections
(Wang and Isola, ICML 2020, "Understanding contrastive representation learning through
alignment and uniformity on the hypersphere") on held-out views, while pretraining.

The held-out views are pairs of views of the eval split drawn as the run's training views
are (its augmentations and the step's blur), the same pairs at every evaluation (seeded by
``--seed``). With
z1_i, z2_i the L2-normalised projections (``proj_head_output``, inference mode) of the two
views of image i:

    alignment  = mean over images i of ||z1_i - z2_i||^alpha             (--alignment_alpha)
    uniformity = log( mean over pairs i != j of exp(-t ||z_i - z_j||^2) )   (--uniformity_t)

the pairs being those of two images of one global eval batch, in the same view, pooled over
the batches and both views (Wang and Isola's estimate on a batch, over every batch read).
Lower is better for both: alignment 0 when the two views of every image meet; uniformity 0
when every projection is one point, and lower, to about -2t, the more evenly they spread over
the sphere. ``--eval_steps`` batches (0: the eval split's size over ``--eval_batch_size``, at
least one; a split smaller than the batch repeats within it).

Each replica embeds its share of a batch; the projections are gathered across replicas
inside the step, and each replica sums its own rows' terms against the whole batch, so the
figures are those of the global batch on any number of replicas.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

from simclr_tf.core import endpoints as ep
from simclr_tf.core import lazy, options

tf = lazy.load("tensorflow")

OPTIONS = (
    options.Option("alignment_alpha", 2.0, "alpha of the align_uniform evaluator's "
                   "alignment, the mean of ||z1 - z2||^alpha.",
                   check=options.positive("alignment_alpha")),
    options.Option("uniformity_t", 2.0, "t of the align_uniform evaluator's uniformity, "
                   "log of the mean of exp(-t ||z_i - z_j||^2).",
                   check=options.positive("uniformity_t")),
)


def evaluator(run, alignment_alpha: float, uniformity_t: float):
    """The part's entry point (``simclr_tf.evaluators``): while pretraining."""
    if run.train_mode != "pretrain":
        return None
    cfg = run.cfg
    steps = max(1, run.source.num_examples(cfg.eval_split) // cfg.eval_batch_size)
    return AlignUniform(run.strategy, run.model, run.views_input(cfg.eval_split, cfg.seed),
                        steps, alignment_alpha, uniformity_t,
                        blur_seed=cfg.seed if cfg.device_blur else None)


def batch_sums(z1, z2, offset, alpha: float, t: float):
    """The sums of one replica's rows: (sum of ||z1_i - z2_i||^alpha over its rows, sum of
    exp(-t ||z_i - z_j||^2) - 1 over its rows i and every other row j of the gathered batch,
    in each view). ``z1``, ``z2``: [b, d] normalised, this replica's; the gathered [B, d]
    come from the replica context; ``offset``: where this replica's rows start in them.

    Exact near collapse, where the figures are small: the squared distances are taken of the
    vectors less the batch's mean (no cancellation of norms near 1), and the kernel's terms
    summed as exp(x) - 1 (``uniformity`` is then log(1 + their mean))."""
    context = tf.distribute.get_replica_context()
    gathered = [context.all_gather(z, axis=0) for z in (z1, z2)]
    rows = tf.range(tf.shape(z1)[0]) + offset
    other = tf.cast(rows[:, None] != tf.range(tf.shape(gathered[0])[0])[None, :], tf.float32)
    aligned = tf.reduce_sum(tf.pow(tf.norm(z1 - z2, axis=-1), alpha))
    spread = 0.0
    for own, every in zip((z1, z2), gathered):
        centre = tf.reduce_mean(every, axis=0, keepdims=True)
        own, every = own - centre, every - centre
        squared = (tf.reduce_sum(tf.square(own), -1)[:, None]
                   + tf.reduce_sum(tf.square(every), -1)[None, :]
                   - 2.0 * tf.matmul(own, every, transpose_b=True))
        spread += tf.reduce_sum(tf.math.expm1(-t * tf.maximum(squared, 0.0)) * other)
    return aligned, spread


class AlignUniform:
    """``evaluate(num_steps)`` -> {"alignment": ..., "uniformity": ...} over ``num_steps``
    batches of ``views_ds`` (-1: ``steps``), distributed batches of (views [b, S, S, 6],
    labels). With ``blur_seed``, batch k's views are blurred as the training step blurs
    its views, keyed by (``blur_seed``, k) (``augment.blur_views``)."""

    at_start = True  # the curves start from the initial weights

    def __init__(self, strategy, model, views_ds, steps: int, alpha: float = 2.0,
                 t: float = 2.0, blur_seed: Optional[int] = None):
        self.strategy, self.model, self.views_ds = strategy, model, views_ds
        self.steps, self.alpha, self.t, self.blur_seed = steps, alpha, t, blur_seed
        self._step = tf.function(self._step_fn)

    def _replica(self, images, labels, index):
        del labels
        if self.blur_seed is not None:
            from simclr_tf.data import augment  # noqa: PLC0415 (TensorFlow: at use only)
            images = augment.blur_views(images, self.blur_seed, index,
                                        self.strategy.num_replicas_in_sync)
        z = self.model(images, training=False)[ep.PROJ_HEAD_OUTPUT]
        z1, z2 = tf.split(tf.math.l2_normalize(tf.cast(z, tf.float32), axis=-1), 2)
        context = tf.distribute.get_replica_context()
        offset = context.replica_id_in_sync_group * tf.shape(z1)[0]
        return batch_sums(z1, z2, offset, self.alpha, self.t) + (
            tf.cast(tf.shape(z1)[0], tf.float32),)

    def _step_fn(self, batch, index):
        sums = self.strategy.run(self._replica, args=(*batch, index))
        return [self.strategy.reduce(tf.distribute.ReduceOp.SUM, s, axis=None) for s in sums]

    def evaluate(self, num_steps) -> Dict[str, float]:
        steps = int(num_steps)
        steps = self.steps if steps <= 0 else steps
        aligned = spread = images = 0.0
        iterator = iter(self.views_ds)
        for index in range(steps):
            a, s, n = (float(v) for v in self._step(next(iterator), tf.constant(index)))
            aligned, spread, images = aligned + a, spread + s, images + n
        batch = images / steps
        pairs = 2 * steps * batch * (batch - 1)  # ordered pairs of distinct images, two views
        mean = spread / pairs  # of exp(-t d^2) - 1, in [-1, 0]
        uniformity = math.log1p(mean) if mean > -1 else float("-inf")
        return {"alignment": aligned / images, "uniformity": uniformity}
