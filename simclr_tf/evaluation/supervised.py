"""Evaluation: top-1 / top-5 of the supervised head, for one checkpoint or for each new one.

``Evaluator`` is the orbit evaluator of the supervised head; ``during_training`` joins it with
the kNN monitor (``knn.py``) into what the training loop runs every checkpoint interval;
``evaluate`` scores one checkpoint (``simclr-eval``); ``evaluate_checkpoints`` scores every
new checkpoint of a run as it appears (``--mode=eval``, the original's evaluation job).
"""

import os
from typing import Dict, Optional

import orbit
import tensorflow as tf
import tf_keras as keras

from simclr_tf.core import config as config_lib
from simclr_tf.core import endpoints as ep
from simclr_tf.core import step_plan
from simclr_tf.data import pipeline as data_lib
from simclr_tf.data import sources
from simclr_tf.evaluation import knn
from simclr_tf.models import simclr_model as model_lib
from simclr_tf.runs import checkpoints, strategies


class Evaluator(orbit.StandardEvaluator):
    """Top-1 / top-5 of the supervised head on centre-cropped eval images."""

    def __init__(self, strategy, model, dataset, num_classes):
        self.strategy, self.model = strategy, model
        with strategy.scope():
            self.top1 = keras.metrics.SparseTopKCategoricalAccuracy(1, name="top1")
            self.top5 = keras.metrics.SparseTopKCategoricalAccuracy(
                min(5, num_classes), name="top5")
        super().__init__(dataset)

    def eval_begin(self):
        self.top1.reset_state()
        self.top5.reset_state()

    def eval_step(self, iterator):
        def step_fn(inputs):
            images, labels = inputs
            logits = self.model(images, training=False)[ep.LOGITS_SUP]
            self.top1.update_state(labels, logits)
            self.top5.update_state(labels, logits)
        self.strategy.run(step_fn, args=(next(iterator),))

    def eval_end(self):
        return {"top1": float(self.top1.result()), "top5": float(self.top5.result())}


class Evaluators(orbit.AbstractEvaluator):
    """Several evaluators as one (their results merged), with one line printed per
    evaluation: ``eval at step 100 | top1 0.412 | top5 0.950 | knn_top1 0.530 (kNN: 5000
    bank images, 1000 queries, 2.1 s)``."""

    def __init__(self, evaluators, step: tf.Variable):
        self.evaluators, self.step = [e for e in evaluators if e is not None], step

    def evaluate(self, num_steps: tf.Tensor) -> Dict[str, float]:
        result: Dict[str, float] = {}
        for evaluator in self.evaluators:
            result.update(evaluator.evaluate(num_steps))
        print(eval_line(int(self.step.numpy()), result, self.monitor), flush=True)
        return result

    @property
    def monitor(self) -> Optional[knn.KnnMonitor]:
        return next((e for e in self.evaluators if isinstance(e, knn.KnnMonitor)), None)


def eval_line(step: int, result: Dict[str, float],
              monitor: Optional[knn.KnnMonitor] = None) -> str:
    """One line of an evaluation's figures (and the kNN monitor's size and time)."""
    figures = " | ".join(f"{name} {float(value):.3f}" for name, value in result.items())
    cost = (f" (kNN: {monitor.bank_size} bank images, {monitor.queries} queries, "
            f"{monitor.seconds:.1f} s)" if monitor is not None and "knn_top1" in result else "")
    return f"eval at step {step} | {figures}{cost}"


def during_training(strategy: tf.distribute.Strategy, model, eval_ds, bank_ds,
                    num_classes: int, cfg: config_lib.Config, step: tf.Variable
                    ) -> Optional[Evaluators]:
    """What a training run evaluates every checkpoint interval: the supervised head's top-1
    / top-5 when the model has one and there is an eval input (a student distilled on
    unlabelled images has none), the kNN monitor when ``bank_ds`` is given; None when
    neither."""
    probe = (Evaluator(strategy, model, eval_ds, num_classes)
             if model.supervised_head is not None and eval_ds is not None else None)
    monitor = (knn.KnnMonitor(strategy, model, bank_ds, eval_ds, num_classes,
                              cfg.eval_batch_size, cfg.knn_k, cfg.knn_temperature)
               if bank_ds is not None else None)
    if probe is None and monitor is None:
        return None
    return Evaluators([probe, monitor], step)


class _CheckpointScorer:
    """The model of ``cfg`` and its eval pipeline, built once; ``score(prefix)`` restores a
    checkpoint into it and evaluates."""

    def __init__(self, cfg: config_lib.Config, prefix: str,
                 strategy: Optional[tf.distribute.Strategy],
                 source: Optional[sources.Source] = None):
        self.cfg = cfg
        self.strategy = strategy or strategies.from_config(cfg)
        data_lib.check_batch_divides(cfg.eval_batch_size, self.strategy.num_replicas_in_sync,
                                     "eval_batch_size")
        self.source = source or data_lib.get_source(cfg.dataset, cfg.data_dir, seed=cfg.seed,
                                                    folder_labels=cfg.folder_labels)
        sources.require_labels(self.source, "evaluation")
        self.source.check_split(cfg.eval_split)
        num_classes = checkpoints.num_classes_in(prefix)
        if num_classes is None:
            raise ValueError(
                f"checkpoint {prefix} has no supervised head to evaluate (it was pretrained "
                "without the linear probe); linear-evaluate it with simclr-finetune "
                f"--linear_eval --checkpoint={prefix}.")
        with self.strategy.scope():
            self.model = model_lib.from_config(cfg, num_classes)
        eval_ds = self.strategy.distribute_datasets_from_function(
            lambda ctx: data_lib.build_dataset(self.source, cfg.eval_split, "eval",
                                               cfg.eval_batch_size, cfg.image_size, ctx))
        self.evaluator = Evaluator(self.strategy, self.model, eval_ds, num_classes)

    def score(self, prefix: str) -> Dict[str, float]:
        checkpoints.restore_for_eval(self.model, prefix)
        result = {k: float(v) for k, v in self.evaluator.evaluate(
            tf.constant(self.cfg.eval_steps or -1)).items()}
        return {**result, "checkpoint": prefix}


def evaluate(cfg: config_lib.Config, checkpoint_path: Optional[str] = None,
             strategy: Optional[tf.distribute.Strategy] = None) -> Dict[str, float]:
    """Top-1 / top-5 of a checkpoint (a prefix or a run's folder; default: the newest in
    ``model_dir``) on ``eval_split``."""
    cfg.validate()
    prefix = checkpoints.resolve(checkpoint_path or cfg.model_dir)
    result = _CheckpointScorer(cfg, prefix, strategy).score(prefix)
    print("eval: " + ", ".join(f"{k} = {v}" for k, v in result.items()), flush=True)
    return result


def evaluate_checkpoints(cfg: config_lib.Config, timeout: Optional[float] = None,
                         min_interval_secs: float = 15) -> Dict[str, float]:
    """Evaluates every new checkpoint of ``cfg.model_dir`` as it appears, until one at the
    run's last step (or ``timeout`` seconds without a new one); summaries go to
    ``model_dir/eval``. Returns the last result."""
    cfg.validate()
    source = data_lib.get_source(cfg.dataset, cfg.data_dir, seed=cfg.seed,
                                 folder_labels=cfg.folder_labels)
    total = step_plan.plan_steps(cfg, source.num_examples(cfg.train_split)).total
    print(f"eval: waiting for the checkpoints of {cfg.model_dir} (up to step {total})",
          flush=True)
    scorer, result = None, {}
    writer = tf.summary.create_file_writer(os.path.join(cfg.model_dir, "eval"))
    for prefix in tf.train.checkpoints_iterator(cfg.model_dir, min_interval_secs, timeout):
        scorer = scorer or _CheckpointScorer(cfg, prefix, None, source)
        result = scorer.score(prefix)
        step = int(prefix.rsplit("-", 1)[-1])
        with writer.as_default(step=step):
            for name in ("top1", "top5"):
                tf.summary.scalar(name, result[name])
        print(f"eval: step {step}, top1 = {result['top1']:.4f}, top5 = {result['top5']:.4f} "
              f"({prefix})", flush=True)
        if step >= total:
            break
    return result
