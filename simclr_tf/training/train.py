"""The training programs as library functions: ``run`` pretrains or fine-tunes, evaluates,
exports and writes ``summary.json``.

``_run`` reads top to bottom in phases, each a function: the inputs and the step counts,
the model and its loop (restore-or-initialise included), the fit with its guards (stop
signals, non-finite losses), and the finish (final metrics, export, summary). The step is
``step.py``, the loop's adapter ``trainer.py``. Only ``simclr_tf/cli`` reads flags; these
take a ``config.Config``.
"""

import contextlib
import dataclasses
import json
import os
import signal
import tempfile
from typing import Callable, Dict, Optional

import orbit
import tensorflow as tf
import tf_keras as keras
from absl import logging

from simclr_tf.core import config as config_lib
from simclr_tf.data import pipeline as data_lib
from simclr_tf.data import sources
from simclr_tf.data import view_pairs as views_lib
from simclr_tf.evaluation import running as evaluation
from simclr_tf.models import saved_files
from simclr_tf.models import simclr_model as model_lib
from simclr_tf.runs import checkpoints, run_folder, strategies
from simclr_tf.runs import export as export_lib
from simclr_tf.training import chunked_step, distill, optim, preemption, run_inputs
from simclr_tf.training import step as step_lib
from simclr_tf.training import trainer as trainer_lib
from simclr_tf.training.run_inputs import Inputs, build_inputs
from simclr_tf.training.trainer import Interrupted, NonFiniteLossError  # noqa: F401 (the API's names)

SUMMARY_FILE = "summary.json"
MAX_ROLLBACKS = 3  # --on_nonfinite=rollback gives up after this many in a row


def _write_json(path: str, payload: Dict):
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def _read_json(path: str) -> Dict:
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def run(cfg: config_lib.Config, strategy: Optional[tf.distribute.Strategy] = None,
        on_end: Optional[Callable[[keras.Model], None]] = None,
        on_start: Optional[Callable[[], None]] = None,
        stop_on_signals: bool = False,
        source: Optional[sources.Source] = None) -> Dict[str, float]:
    """Trains (pretraining or fine-tuning, by ``cfg.train_mode``), evaluates, and returns the
    metrics written to ``model_dir/summary.json``.

    ``strategy`` overrides ``cfg.strategy`` (for notebooks and tests that already built one);
    ``on_end(model)`` is called with the trained model on every worker before returning;
    ``on_start()`` on the chief once it holds model_dir's lock (the CLI writes flags.txt).
    ``source`` replaces ``cfg.dataset`` / ``cfg.data_dir``: e.g. ``sources.ArraySource`` to
    train on NumPy arrays from a notebook (splits by name, as ``cfg.train_split``).
    With ``stop_on_signals`` (the programs), SIGTERM or SIGINT stops training before the
    next step, saves a checkpoint there and raises ``Interrupted``; with several workers, a
    signal to any of them stops all of them at the same step, and they save it together.
    """
    cfg.validate()
    chief = strategies.is_chief()  # asked once: the rest of the run is told
    if not chief:  # other workers write nothing into model_dir
        return _run(cfg, strategy, on_end, stop_on_signals, source, chief)
    _check_sources(cfg)  # before model_dir is made: a refused run leaves nothing behind
    run_folder.output_folder(cfg.model_dir, "model_dir")
    # One run per model_dir; under its lock, remove what interrupted writes left behind.
    with run_folder.RunLock(cfg.model_dir):
        removed = checkpoints.remove_partial_writes(cfg.model_dir)
        removed += export_lib.remove_partial_exports(cfg.model_dir)
        if removed:
            print(f"cleaned {removed} partial checkpoint or export write(s) left in "
                  f"{cfg.model_dir}", flush=True)
        if on_start is not None:
            on_start()
        return _run(cfg, strategy, on_end, stop_on_signals, source, chief)


def _check_sources(cfg: config_lib.Config):
    """One line on an export or checkpoint the run starts from that is missing, damaged or
    another program's: --hub_module, and --checkpoint unless the run resumes from its own."""
    if cfg.hub_module:
        saved_files.export_outputs(cfg.hub_module, "--hub_module")
    resumes = tf.io.gfile.isdir(cfg.model_dir) and tf.train.latest_checkpoint(cfg.model_dir)
    if cfg.checkpoint and not resumes:
        saved_files.check_bundle(checkpoints.resolve(cfg.checkpoint),
                                 f"--checkpoint={cfg.checkpoint!r}")


@dataclasses.dataclass
class _Loop:
    """The model and everything that trains, saves and evaluates it."""

    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    trainer: trainer_lib.Trainer
    evaluator: Optional[evaluation.Evaluators]
    manager: checkpoints.RunCheckpointManager
    controller: orbit.Controller
    write_dir: str  # model_dir on the chief; a private folder on other workers
    start_step: int
    chief: bool  # this process writes checkpoints, summaries and exports


def _run(cfg: config_lib.Config, strategy: Optional[tf.distribute.Strategy],
         on_end: Optional[Callable[[keras.Model], None]], stop_on_signals: bool,
         source: Optional[sources.Source], chief: bool) -> Dict[str, float]:
    strategy = strategy or strategies.from_config(cfg)
    num_replicas = strategy.num_replicas_in_sync
    data_lib.check_batch_divides(cfg.train_batch_size, num_replicas, "train_batch_size")
    data_lib.check_batch_divides(cfg.eval_batch_size, num_replicas, "eval_batch_size")
    chunked_step.check_chunks_divide(cfg.train_batch_size // num_replicas,
                                     cfg.embedding_chunks)
    inputs = build_inputs(cfg, strategy, source)
    with trainer_lib.quiet_orbit():  # orbit reports its restore: "resumed from" says it
        loop = _build_loop(cfg, strategy, inputs, chief)
    _announce(cfg, inputs, loop, num_replicas)
    if (cfg.train_mode == "pretrain" and cfg.views_summary and loop.start_step == 0
            and chief):
        views_lib.views_summary(cfg, inputs.source, os.path.join(cfg.model_dir, "train"))
    with trainer_lib.quiet_orbit():
        eval_result = _fit(cfg, strategy, loop, stop_on_signals)
    return _finish(cfg, inputs, loop, eval_result, on_end)


def _teacher(cfg: config_lib.Config, strategy: tf.distribute.Strategy,
             source: sources.Source) -> Optional[distill.Teacher]:
    """Distilling: the teacher, loaded on every replica, checked against the data's classes."""
    if cfg.train_mode != "distill":
        return None
    teacher = distill.load_teacher(cfg.teacher, strategy)
    classes = source.info.num_classes
    if source.classifiable and teacher.num_classes != classes:
        raise ValueError(f"--teacher={cfg.teacher!r} predicts {teacher.num_classes} classes; "
                         f"the data ({cfg.dataset}) has {classes}: give a teacher fine-tuned "
                         "on these classes.")
    print(f"distill: teacher {teacher.description} ({teacher.num_classes} classes), "
          f"temperature {cfg.distill_temperature}, distillation weight {cfg.distill_weight}",
          flush=True)
    return teacher


def _initialiser(cfg: config_lib.Config, model, optimizer, chief: bool
                 ) -> Optional[Callable[[], None]]:
    """What fills a run without a checkpoint of its own: fine-tuning starts from
    --checkpoint (encoder and projection head only); a worker that is not the chief
    resumes from the chief's newest checkpoint (it saves into a private folder)."""
    latest = tf.train.latest_checkpoint(cfg.model_dir)
    if not chief and latest:
        return lambda: checkpoints.restore_training(model, optimizer, latest)
    if cfg.checkpoint:
        return lambda: checkpoints.restore_pretrained(model, cfg.checkpoint)
    if cfg.train_mode == "finetune" and not cfg.hub_module:
        logging.warning("Fine-tuning without --checkpoint: the encoder starts from random "
                        "initialisation.")
    return None


def _build_loop(cfg: config_lib.Config, strategy: tf.distribute.Strategy, inputs: Inputs,
                chief: bool) -> _Loop:
    """The model, optimizer, step, trainer, evaluator and checkpoint manager, restored from
    the newest checkpoint in model_dir when there is one."""
    if cfg.deterministic:  # the same initial weights and the same op results every run
        keras.utils.set_random_seed(cfg.seed)
        tf.config.experimental.enable_op_determinism()
    plan, num_classes = inputs.plan, inputs.source.info.num_classes
    teacher = _teacher(cfg, strategy, inputs.source)
    num_classes = teacher.num_classes if teacher else num_classes
    with strategy.scope():
        model = model_lib.from_config(cfg, num_classes if inputs.with_head else None, strategy)
        optimizer = optim.run_optimizer(cfg, plan)
    pretraining = cfg.train_mode == "pretrain"
    trainer = trainer_lib.Trainer(
        strategy, step_lib.make_replica_step(model, optimizer, cfg,
                                             strategy.num_replicas_in_sync, teacher),
        optimizer, step_lib.metric_names(pretraining, model.supervised_head is not None,
                                         cfg.distill_weight if teacher else None),
        # orbit reads this iterator; with --deterministic its position is saved with every
        # checkpoint, so a resumed run reads the batches the interrupted one would have read.
        iter(inputs.train_ds), plan,
        preemption.StopFlag(strategy, strategies.num_workers()),
        "contrast_acc" if pretraining else "teacher_agreement" if teacher else
        "supervised_acc")
    write_dir = cfg.model_dir if chief else tempfile.mkdtemp(prefix="simclr_tf_worker_")
    manager = checkpoints.make_manager(
        model, optimizer, write_dir, cfg.keep_checkpoint_max, plan.checkpoint,
        _initialiser(cfg, model, optimizer, chief),
        trainer.train_dataset if cfg.deterministic else None)
    evaluator = evaluation.during_training(
        evaluation.Run(strategy, model, inputs.source, cfg,
                       num_classes if inputs.with_head else None), optimizer.iterations)
    controller = orbit.Controller(
        strategy=strategy, trainer=trainer, evaluator=evaluator,
        global_step=optimizer.iterations, steps_per_loop=plan.per_loop,
        checkpoint_manager=manager, summary_interval=plan.per_loop,
        summary_dir=os.path.join(cfg.model_dir, "train") if chief else None,
        eval_summary_dir=os.path.join(cfg.model_dir, "eval") if chief else None)
    return _Loop(model, optimizer, trainer, evaluator, manager, controller, write_dir,
                 int(optimizer.iterations.numpy()), chief)


def _announce(cfg: config_lib.Config, inputs: Inputs, loop: _Loop, num_replicas: int):
    plan = inputs.plan
    peak = optim.scale_learning_rate(cfg.learning_rate, cfg.train_batch_size,
                                     cfg.learning_rate_scaling)
    print(f"{cfg.train_mode}: {plan.num_examples} training examples, batch "
          f"{cfg.train_batch_size} on {num_replicas} replica(s), {plan.total} steps "
          f"({plan.warmup} warm-up), peak learning rate {peak:.4g}", flush=True)
    if loop.start_step:
        print(f"resumed from {loop.manager.restored or loop.manager.latest_checkpoint} at "
              f"step {loop.start_step}", flush=True)


def _fit(cfg: config_lib.Config, strategy: tf.distribute.Strategy, loop: _Loop,
         stop_on_signals: bool) -> Optional[Dict]:
    """Trains to the last step, evaluating every checkpoint interval when the run has
    evaluators (``--evaluators``); returns the last evaluation. A non-finite loss stops or rolls back
    (``_roll_back``); a stop signal saves a checkpoint at the step reached and re-raises."""
    plan = loop.trainer.plan
    watch = (preemption.StopOnSignals(loop.trainer.stop.requested) if stop_on_signals
             else contextlib.nullcontext())
    rollbacks = []  # the checkpoints rolled back to, since the last new one
    if loop.start_step == 0 and loop.evaluator is not None and loop.evaluator.at_start:
        loop.controller.evaluate(cfg.eval_steps or -1)  # where the features' curves start
    try:
        with watch:
            while True:
                try:
                    if loop.evaluator is None:
                        loop.controller.train(plan.total)
                        return None
                    return loop.controller.train_and_evaluate(
                        plan.total, cfg.eval_steps or -1, plan.checkpoint)
                except NonFiniteLossError as e:
                    _roll_back(cfg, strategy, loop, e, rollbacks)
    except Interrupted as e:
        _save_on_signal(cfg, loop, e, getattr(watch, "signum", None))
        raise


def _save_on_signal(cfg: config_lib.Config, loop: _Loop, error: Interrupted,
                    own: Optional[int]):
    """Saves the checkpoint of an interrupted run (every worker: the save is collective)."""
    error.signum = own or error.signum
    step = int(loop.optimizer.iterations.numpy())
    error.checkpoint = loop.manager.save_now(step)
    chief = loop.chief
    if not chief:
        tf.io.gfile.rmtree(loop.write_dir)
        error.checkpoint = os.path.join(cfg.model_dir, os.path.basename(error.checkpoint))
    cause = (f"{signal.Signals(error.signum).name} received" if own else
             "a signal reached another worker")
    print(f"{cause}: {'the chief ' if not chief else ''}saved checkpoint {error.checkpoint} "
          f"at step {step}; run the same command to continue.", flush=True)


def _roll_back(cfg: config_lib.Config, strategy: tf.distribute.Strategy, loop: _Loop,
               error: NonFiniteLossError, rollbacks: list):
    """``--on_nonfinite``: ``stop`` re-raises, naming the last good checkpoint; ``rollback``
    restores it and goes on with the next batches (the one that diverged is skipped), giving
    up after MAX_ROLLBACKS rollbacks to the same checkpoint."""
    last_good = loop.manager.latest_checkpoint
    kept = (f" The last good checkpoint, {last_good}, is kept." if last_good else
            " No checkpoint was saved before it.")
    if cfg.on_nonfinite != "rollback" or last_good is None:
        raise NonFiniteLossError(f"{error}{kept}", error.step) from error
    if rollbacks and rollbacks[-1] != last_good:
        rollbacks.clear()  # a new checkpoint was saved since: not "in a row"
    if len(rollbacks) >= MAX_ROLLBACKS:
        raise NonFiniteLossError(
            f"{error} Gave up after {MAX_ROLLBACKS} rollbacks in a row to {last_good}, which "
            "is kept.", error.step) from error
    rollbacks.append(last_good)
    with strategy.scope():
        checkpoints.restore_training(loop.model, loop.optimizer, last_good)
    loop.trainer.first_nonfinite_step.assign(-1)
    print(f"non-finite loss at step {error.step}: rolled back to {last_good} (step "
          f"{int(loop.optimizer.iterations.numpy())}) and skipping the batches since "
          f"(rollback {len(rollbacks)} of at most {MAX_ROLLBACKS} in a row).", flush=True)


def _finish(cfg: config_lib.Config, inputs: Inputs, loop: _Loop, eval_result: Optional[Dict],
            on_end: Optional[Callable[[keras.Model], None]]) -> Dict:
    """The run's summary: the last training loop's metrics and the final evaluation; then
    (chief) the export of the final checkpoint and ``summary.json``."""
    step = int(loop.optimizer.iterations.numpy())
    trained = step > loop.start_step
    summary_path = os.path.join(cfg.model_dir, SUMMARY_FILE)
    summary = {} if trained else _read_json(summary_path)
    if trained:
        summary.update({k: float(m.result()) for k, m in loop.trainer.metrics.items()})
    if loop.evaluator is not None:
        if eval_result is None:  # nothing left to train: evaluate what is there
            with trainer_lib.quiet_orbit():
                eval_result = loop.controller.evaluate(cfg.eval_steps or -1)
        summary.update({k: float(v) for k, v in eval_result.items()})  # all they report
    summary["global_step"] = step
    summary.update(run_inputs.data_facts(cfg, inputs))
    if on_end is not None:
        on_end(loop.model)
    if not loop.chief:
        tf.io.gfile.rmtree(loop.write_dir)
        return summary
    # Every run ends with a hub-style export of its final checkpoint (the original exported
    # nothing when pretraining without the probe).
    if cfg.keep_hub_module_max > 0:
        final = os.path.join(cfg.model_dir, export_lib.EXPORTS_SUBDIR, str(step))
        if trained or not tf.io.gfile.exists(final):
            export_lib.export_checkpoint(cfg, loop.manager.latest_checkpoint, final)
            for old in export_lib.list_exports(cfg.model_dir)[:-cfg.keep_hub_module_max]:
                tf.io.gfile.rmtree(old)
        summary["saved_model"] = final
    _write_json(summary_path, summary)
    print(f"{cfg.train_mode} done: " + ", ".join(
        f"{k} = {v:.4f}" if isinstance(v, float) else f"{k} = {v}"
        for k, v in sorted(summary.items())), flush=True)
    return summary
