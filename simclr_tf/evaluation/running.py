"""A run's evaluators, found by name (``--evaluators=probe,knn``: the modules of
``simclr_tf.evaluators``, ``core.parts``), built for one run and evaluated as one.

``Run`` is what an evaluator is given: the strategy, the model, the data and the run's
settings, with the inputs it may read (built when first asked for). ``build`` makes the
evaluators a config names; ``Evaluators`` evaluates them together (their results merged,
one eval line printed), as the training loop and the eval job (``supervised.py``) do.
Nothing here names an evaluator: whatever one reports reaches summary.json, TensorBoard and
the eval line.
"""

import dataclasses
import functools
from typing import Dict, List, Optional

import orbit
import tensorflow as tf

from simclr_tf.core import config as config_lib
from simclr_tf.core import parts
from simclr_tf.data import pipeline as data_lib
from simclr_tf.data import sources


@dataclasses.dataclass
class Run:
    """What an evaluator of a run is given.

    ``model(images, training=False)`` returns the endpoints (``core.endpoints``);
    ``num_classes`` is the supervised head's (None: the model has no head); ``source`` the
    run's data (its label subset applied), ``cfg`` its settings."""

    strategy: tf.distribute.Strategy
    model: object
    source: sources.Source
    cfg: config_lib.Config
    num_classes: Optional[int] = None

    @property
    def train_mode(self) -> str:
        return self.cfg.train_mode

    def eval_input(self, split: str, source: Optional[sources.Source] = None):
        """``split`` of ``source`` (default: the run's) centre-cropped, read once, in
        batches of ``--eval_batch_size`` over the replicas: ``(images, labels)``."""
        src, cfg = source or self.source, self.cfg
        return self.strategy.distribute_datasets_from_function(
            lambda ctx: data_lib.build_dataset(src, split, "eval", cfg.eval_batch_size,
                                               cfg.image_size, ctx))

    def views_input(self, split: str, seed: int):
        """Pairs of views of ``split`` drawn as the run's input pipeline draws its training
        views (its augmentations; the step's blur on the device is not in them:
        ``augment.blur_views``), in batches of ``--eval_batch_size``: ``(images [b, S, S,
        6], labels)``, in the split's order (no shuffle), repeated without end: the same
        views on every pass for one ``seed``."""
        cfg = self.cfg
        return self.strategy.distribute_datasets_from_function(
            lambda ctx: data_lib.build_dataset(
                self.source, split, "pretrain", cfg.eval_batch_size, cfg.image_size, ctx,
                seed=seed, shuffle_buffer=1, **data_lib.view_settings(cfg)))

    @functools.cached_property
    def eval_ds(self):
        """The eval split (``--eval_split``) as ``eval_input`` reads it; built once, shared
        by the evaluators that read it."""
        self.source.check_split(self.cfg.eval_split)
        return self.eval_input(self.cfg.eval_split)


def build(run: Run, names: Optional[str] = None) -> List:
    """The evaluators ``names`` (default: the run's ``--evaluators``) that apply to ``run``,
    in order: each part's ``evaluator(run, **its options)``, those returning None left out."""
    made = []
    for name in parts.chosen("evaluator", run.cfg.evaluators if names is None else names):
        part = parts.find("evaluator", name)
        evaluator = part.evaluator(run, **parts.values_for(part, run.cfg))
        if evaluator is not None:
            made.append(evaluator)
    return made


def evaluate_all(evaluators: List, num_steps: tf.Tensor) -> Dict[str, float]:
    """Every evaluator's results, merged into one dict of floats; two evaluators reporting
    one name is refused in one line."""
    result: Dict[str, float] = {}
    for evaluator in evaluators:
        for name, value in evaluator.evaluate(num_steps).items():
            if name in result:
                raise ValueError(f"two evaluators report {name!r} ({type(evaluator).__name__} "
                                 "and one before it): give each figure its own name.")
            result[name] = float(value)
    return result


class Evaluators(orbit.AbstractEvaluator):
    """Several evaluators as one orbit evaluator (their results merged), with one line printed
    per evaluation: ``eval at step 100 | top1 0.412 | top5 0.950 | knn_top1 0.530 (kNN: 5000
    bank images, 1000 queries, 2.1 s)`` (the parenthesis: an evaluator's ``note()``)."""

    def __init__(self, evaluators: List, step: tf.Variable):
        self.evaluators, self.step = list(evaluators), step

    def evaluate(self, num_steps: tf.Tensor) -> Dict[str, float]:
        result = evaluate_all(self.evaluators, num_steps)
        print(eval_line(int(self.step.numpy()), result, self.notes()), flush=True)
        return result

    @property
    def at_start(self) -> bool:
        """Whether the run evaluates at step 0 too: an evaluator of the features (kNN,
        alignment) says so with ``at_start = True``; its curve starts from the initial
        weights."""
        return any(getattr(e, "at_start", False) for e in self.evaluators)

    def notes(self) -> List[str]:
        return [n for n in (e.note() for e in self.evaluators if hasattr(e, "note")) if n]


def eval_line(step: int, result: Dict[str, float], notes: List[str] = ()) -> str:
    """One line of an evaluation's figures (and the evaluators' notes, e.g. kNN's cost)."""
    figures = " | ".join(f"{name} {float(value):.3f}" for name, value in result.items())
    return f"eval at step {step} | {figures}" + "".join(f" ({note})" for note in notes)


def during_training(run: Run, step: tf.Variable) -> Optional[Evaluators]:
    """What a training run evaluates every checkpoint interval: its ``--evaluators`` that
    apply to it (None when none does)."""
    evaluators = build(run)
    return Evaluators(evaluators, step) if evaluators else None
