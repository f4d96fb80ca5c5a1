"""Evaluation of checkpoints: the supervised head's top-1 / top-5, and a run's evaluators on
one checkpoint or on each new one.

``Evaluator`` is the orbit evaluator of the supervised head (``--evaluators=probe``);
``evaluate`` scores one checkpoint (``simclr-eval``) and ``evaluate_checkpoints`` every new
checkpoint of a run as it appears (``--mode=eval``, the original's evaluation job), each with
the run's ``--evaluators`` (``running.py``), reporting whatever they report.
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
from simclr_tf.evaluation import running
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


class _CheckpointScorer:
    """The model of ``cfg``, its data and its evaluators, built once; ``score(prefix)``
    restores a checkpoint into the model and evaluates it."""

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
        with self.strategy.scope():
            self.model = model_lib.from_config(cfg, num_classes)
        self.evaluators = running.build(running.Run(self.strategy, self.model, self.source,
                                                    cfg, num_classes))
        if not self.evaluators and num_classes is None:
            raise ValueError(
                f"checkpoint {prefix} has no supervised head to evaluate (it was pretrained "
                f"without the linear probe) and --evaluators={cfg.evaluators!r} has nothing "
                "else for it; linear-evaluate it with simclr-finetune --linear_eval "
                f"--checkpoint={prefix}.")
        if not self.evaluators:
            raise ValueError(f"--evaluators={cfg.evaluators!r} evaluates nothing of "
                             f"checkpoint {prefix}; name one, e.g. --evaluators=probe.")

    def score(self, prefix: str) -> Dict[str, float]:
        checkpoints.restore_for_eval(self.model, prefix)
        result = running.evaluate_all(self.evaluators, tf.constant(self.cfg.eval_steps or -1))
        return {**result, "checkpoint": prefix}


def evaluate(cfg: config_lib.Config, checkpoint_path: Optional[str] = None,
             strategy: Optional[tf.distribute.Strategy] = None) -> Dict[str, float]:
    """The figures of the run's ``--evaluators`` (top-1 / top-5 of the probe, kNN, ...) on a
    checkpoint (a prefix or a run's folder; default: the newest in ``model_dir``)."""
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
        figures = {k: v for k, v in result.items() if k != "checkpoint"}
        with writer.as_default(step=step):
            for name, value in figures.items():
                tf.summary.scalar(name, value)
        print(f"eval: step {step}, " + ", ".join(f"{k} = {v:.4f}" for k, v in figures.items())
              + f" ({prefix})", flush=True)
        if step >= total:
            break
    return result
