"""The training programs as library functions: ``pretrain``, ``finetune`` and ``evaluate``.

Each reads top to bottom in phases: input, model and optimizer, restore-or-initialise, the
step (``steps_per_loop`` steps inside one tf.function, driven by orbit), the loop, and the
final evaluation and ``summary.json``. Only ``simclr_tf/cli`` reads flags; these take a
``config.Config``.
"""

import contextlib
import dataclasses
import json
import os
import signal
import tempfile
import time
from typing import Callable, Dict, Optional

import orbit
import tensorflow as tf
import tf_keras as keras
from absl import logging

from simclr_tf import augment
from simclr_tf import checkpoints
from simclr_tf import config as config_lib
from simclr_tf import data as data_lib
from simclr_tf import endpoints as ep
from simclr_tf import evaluation
from simclr_tf import export as export_lib
from simclr_tf import folder
from simclr_tf import losses
from simclr_tf import metrics as metrics_lib
from simclr_tf import model as model_lib
from simclr_tf import optim
from simclr_tf import preemption
from simclr_tf import rundir
from simclr_tf import sources
from simclr_tf import strategies
from simclr_tf import subsets

SUMMARY_FILE = "summary.json"

# orbit prints every loop's whole output dict; our progress line says the same in one line,
# so orbit's messages go to the INFO log only.
orbit.controller._log = logging.info  # noqa: SLF001


MAX_ROLLBACKS = 3  # --on_nonfinite=rollback gives up after this many in a row


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite at ``step``."""

    def __init__(self, message: str, step: int = -1):
        super().__init__(message)
        self.step = step


class Interrupted(Exception):
    """Training stopped on SIGTERM or SIGINT; a checkpoint at ``step`` was saved."""

    def __init__(self, signum: int, step: int, checkpoint: Optional[str] = None):
        super().__init__(f"{signal.Signals(signum).name} at step {step}")
        self.signum, self.step, self.checkpoint = signum, step, checkpoint


build_model = model_lib.from_config  # the model of a Config (kept under this name)


def make_optimizer(cfg: config_lib.Config, learning_rate) -> keras.optimizers.Optimizer:
    """``cfg.optimizer`` with ``learning_rate`` (a schedule or a float); float16 adds loss
    scaling. Call it inside the strategy's scope."""
    optimizer = optim.build_optimizer(cfg.optimizer, learning_rate, cfg.momentum,
                                      cfg.weight_decay)
    if cfg.precision == "mixed_float16":
        optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
    return optimizer


class Trainer(orbit.StandardTrainer):
    """One training step for pretraining (NT-Xent + probe) or fine-tuning (cross-entropy)."""

    def __init__(self, cfg, strategy, model, optimizer, dataset, total_steps, steps_per_epoch):
        self.cfg, self.strategy, self.model, self.optimizer = cfg, strategy, model, optimizer
        self.total_steps, self.steps_per_epoch = total_steps, steps_per_epoch
        self.pretraining = cfg.train_mode == "pretrain"
        names = ["loss", "weight_decay"]
        if self.pretraining:
            names += ["contrast_loss", "contrast_acc", "contrast_entropy"]
        if model.supervised_head is not None:
            names += ["supervised_loss", "supervised_acc"]
        with strategy.scope():
            self.metrics = {n: keras.metrics.Mean(n, dtype=tf.float32) for n in names}
            self.first_nonfinite_step = tf.Variable(-1, dtype=tf.int64, trainable=False)
            _ = optimizer.iterations  # created here, not lazily inside the first step
        # Set from another thread on SIGTERM / SIGINT; the loop checks it before each step.
        self.stop_requested = tf.Variable(False, trainable=False, name="stop_requested")
        # With several workers, a signal reaches one of them: the loop sums the flags of all
        # replicas before each step (a scalar all-reduce), so every worker stops at the same
        # step and they save that checkpoint together. The agreed answer is kept apart from
        # ``stop_requested``, which only the signal watcher writes.
        self._agree_on_stop = strategies.num_workers() > 1
        self.stop_agreed = tf.Variable(False, trainable=False, name="stop_agreed")
        self._loop_start = None
        self._loss_scaling = isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer)
        self.replica_step = (tf.function(self._step_fn, jit_compile=True) if cfg.jit_compile
                             else self._step_fn)
        super().__init__(dataset, orbit.StandardTrainerOptions(use_tf_while_loop=True))

    def create_train_loop_fn(self):
        """orbit's loop of ``num_steps`` steps in one tf.function, ending early (before the
        next step) once ``stop_requested`` is set."""

        def loop_fn(iterator, num_steps):
            def keep_going(i, stop):
                return tf.logical_and(i < tf.cast(num_steps, tf.int32), tf.logical_not(stop))

            def body(i, stop):
                del stop
                with tf.name_scope(""):
                    self.train_step(iterator)
                return i + 1, self._stop_now()

            tf.while_loop(keep_going, body, [tf.constant(0), self._stop_now()])

        return tf.function(loop_fn)

    def _stop_now(self) -> tf.Tensor:
        """Whether to stop before the next step; with several workers, whether any must."""
        if not self._agree_on_stop:
            return self.stop_requested.read_value()
        flags = self.strategy.run(lambda: tf.cast(self.stop_requested.read_value(), tf.int32))
        stop = self.strategy.reduce(tf.distribute.ReduceOp.SUM, flags, axis=None) > 0
        self.stop_agreed.assign(stop)
        return stop

    def stopping(self) -> bool:
        """Whether the last loop ended on a stop request (anywhere in the cluster)."""
        flag = self.stop_agreed if self._agree_on_stop else self.stop_requested
        return bool(flag.numpy())

    def train_loop_begin(self):
        for metric in self.metrics.values():
            metric.reset_state()
        self._loop_start = (time.time(), int(self.optimizer.iterations.numpy()))

    def train_step(self, iterator):
        loss = self.strategy.run(self.replica_step, args=(next(iterator),))
        loss = self.strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        step = self.optimizer.iterations
        bad = tf.logical_and(tf.logical_not(tf.math.is_finite(loss)),
                             self.first_nonfinite_step < 0)
        self.first_nonfinite_step.assign(tf.where(bad, step, self.first_nonfinite_step))

    def _blur(self, images):
        """The on-device Gaussian blur, per image (independent sigma and coin).

        Its draws are a function of (seed, step, position in the global batch), so a step
        blurs the same images the same way on any number of replicas.
        """
        ctx = tf.distribute.get_replica_context()
        local = tf.shape(images)[0]
        offset = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * local
        total = local * self.strategy.num_replicas_in_sync
        step_seed = tf.stack([tf.cast(self.cfg.seed, tf.int64),
                              tf.cast(self.optimizer.iterations, tf.int64)])
        views = tf.split(images, 2, axis=-1)
        seeds = tf.unstack(tf.random.experimental.stateless_split(step_seed, 2))
        return tf.concat([augment.batch_random_blur(v, seed=s, offset=offset, global_batch=total)
                          for v, s in zip(views, seeds)], axis=-1)

    def _step_fn(self, inputs):
        images, labels = inputs
        num_replicas = self.strategy.num_replicas_in_sync
        if self.pretraining and self.cfg.use_blur:
            images = self._blur(images)
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            outputs = self.model(images, training=True)
            loss = 0.0
            if self.pretraining:
                z1, z2 = tf.split(outputs[ep.PROJ_HEAD_OUTPUT], 2, axis=0)
                con_loss, logits, con_labels = losses.nt_xent(
                    z1, z2, self.cfg.temperature, normalize=self.cfg.hidden_norm)
                loss += con_loss
                self.metrics["contrast_loss"].update_state(con_loss)
                self.metrics["contrast_acc"].update_state(
                    metrics_lib.contrastive_accuracy(logits, con_labels))
                self.metrics["contrast_entropy"].update_state(
                    metrics_lib.contrastive_entropy(logits))
                labels = tf.concat([labels, labels], axis=0)  # the probe sees both views
            if ep.LOGITS_SUP in outputs:
                sup_loss = losses.supervised_cross_entropy(labels, outputs[ep.LOGITS_SUP])
                loss += sup_loss
                self.metrics["supervised_loss"].update_state(sup_loss)
                self.metrics["supervised_acc"].update_state(
                    metrics_lib.top_k_accuracy(labels, outputs[ep.LOGITS_SUP], 1))
            decay = optim.weight_decay_loss(variables, self.cfg.weight_decay, self.cfg.optimizer)
            loss += decay
            # apply_gradients sums over replicas: dividing gives the mean gradient.
            scaled_loss = loss / num_replicas
            if self._loss_scaling:  # float16: scale the loss so small gradients survive
                scaled_loss = self.optimizer.get_scaled_loss(scaled_loss)
        grads = tape.gradient(scaled_loss, variables)
        if self._loss_scaling:
            grads = self.optimizer.get_unscaled_gradients(grads)
        # Variables that do not reach the loss (e.g. the projection head when fine-tuning
        # from its input) have no gradient; leave them out rather than warn every step.
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        self.optimizer.apply_gradients(pairs)
        self.metrics["loss"].update_state(loss)
        self.metrics["weight_decay"].update_state(decay)
        return loss / num_replicas

    def train_loop_end(self) -> Dict[str, float]:
        step = int(self.optimizer.iterations.numpy())
        if self.stopping():
            raise Interrupted(signal.SIGTERM, step)  # run() puts in the signal received
        bad_step = int(self.first_nonfinite_step.numpy())
        if bad_step >= 0:
            raise NonFiniteLossError(
                f"the training loss became non-finite at step {bad_step} (loss "
                f"{float(self.metrics['loss'].result()):.4g}); stopping before it is saved. "
                "Lower --learning_rate, check the data, or resume from the last checkpoint.",
                bad_step)
        logs = {n: float(m.result()) for n, m in self.metrics.items()}
        logs["learning_rate"] = float(_current_lr(self.optimizer))
        start_time, start_step = self._loop_start
        elapsed = max(time.time() - start_time, 1e-9)
        examples_per_sec = (step - start_step) * self.cfg.train_batch_size / elapsed
        logs["examples_per_sec"] = examples_per_sec
        remaining = (self.total_steps - step) * self.cfg.train_batch_size / max(
            examples_per_sec, 1e-9)
        epoch = step / max(self.steps_per_epoch, 1)
        main = "contrast_acc" if self.pretraining else "supervised_acc"
        extra = f" | {main} {logs[main]:.3f}" if main in logs else ""
        print(f"step {step}/{self.total_steps} | epoch {epoch:.2f} | loss {logs['loss']:.4f}"
              f"{extra} | {examples_per_sec:.1f} examples/s | "
              f"ETA {_format_duration(remaining)}", flush=True)
        return logs


def _current_lr(optimizer):
    lr = optimizer.learning_rate
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        return lr(optimizer.iterations)
    return lr


def _format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


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
        stop_on_signals: bool = False) -> Dict[str, float]:
    """Trains (pretraining or fine-tuning, by ``cfg.train_mode``), evaluates, and returns the
    metrics written to ``model_dir/summary.json``.

    ``strategy`` overrides ``cfg.strategy`` (for notebooks and tests that already built one);
    ``on_end(model)`` is called with the trained model on every worker before returning;
    ``on_start()`` on the chief once it holds model_dir's lock (the CLI writes flags.txt).
    With ``stop_on_signals`` (the programs), SIGTERM or SIGINT stops training before the
    next step, saves a checkpoint there and raises ``Interrupted``; with several workers, a
    signal to any of them stops all of them at the same step, and they save it together.
    """
    cfg.validate()
    if not strategies.is_chief():  # other workers write nothing into model_dir
        return _run(cfg, strategy, on_end, stop_on_signals)
    _make_model_dir(cfg.model_dir)
    # One run per model_dir; under its lock, remove what interrupted writes left behind.
    with rundir.RunLock(cfg.model_dir):
        removed = checkpoints.remove_partial_writes(cfg.model_dir)
        removed += export_lib.remove_partial_exports(cfg.model_dir)
        if removed:
            print(f"cleaned {removed} partial checkpoint or export write(s) left in "
                  f"{cfg.model_dir}", flush=True)
        if on_start is not None:
            on_start()
        return _run(cfg, strategy, on_end, stop_on_signals)


def _make_model_dir(model_dir: str):
    if tf.io.gfile.exists(model_dir) and not tf.io.gfile.isdir(model_dir):
        raise ValueError(f"--model_dir={model_dir!r} is a file; give a folder (it is created "
                         "when missing).")
    try:
        tf.io.gfile.makedirs(model_dir)
    except (OSError, tf.errors.OpError) as e:
        raise ValueError(f"--model_dir={model_dir!r} cannot be created or written "
                         f"({type(e).__name__}: {str(e)[:200]}).") from e


def _run(cfg: config_lib.Config, strategy: Optional[tf.distribute.Strategy],
         on_end: Optional[Callable[[keras.Model], None]], stop_on_signals: bool
         ) -> Dict[str, float]:
    strategy = strategy or strategies.from_config(cfg)
    num_replicas = strategy.num_replicas_in_sync
    data_lib.check_batch_divides(cfg.train_batch_size, num_replicas, "train_batch_size")
    data_lib.check_batch_divides(cfg.eval_batch_size, num_replicas, "eval_batch_size")

    # Input.
    pretraining = cfg.train_mode == "pretrain"
    source, with_head, label_counts = _training_source(cfg)
    num_train = source.num_examples(cfg.train_split)
    steps_per_epoch = max(1, round(num_train / cfg.train_batch_size))
    total_steps = optim.total_train_steps(num_train, cfg.train_batch_size, cfg.train_epochs,
                                          cfg.train_steps)
    warmup_steps = optim.epochs_to_steps(cfg.warmup_epochs, num_train, cfg.train_batch_size)
    checkpoint_steps = cfg.checkpoint_steps or max(1, optim.epochs_to_steps(
        cfg.checkpoint_epochs, num_train, cfg.train_batch_size))
    steps_per_loop = min(cfg.steps_per_loop or checkpoint_steps, total_steps)
    train_ds = strategy.distribute_datasets_from_function(
        lambda ctx: data_lib.build_dataset(
            source, cfg.train_split, "pretrain" if pretraining else "finetune",
            cfg.train_batch_size, cfg.image_size, ctx,
            color_jitter_strength=cfg.color_jitter_strength,
            color_jitter_impl=cfg.color_jitter_impl, jit_augment=cfg.jit_augment,
            cache=cfg.cache_dataset,
            seed=cfg.seed))

    # Model and optimizer.
    if cfg.deterministic:  # the same initial weights and the same op results every run
        keras.utils.set_random_seed(cfg.seed)
        tf.config.experimental.enable_op_determinism()
    num_classes = source.info.num_classes if with_head else None
    with strategy.scope():
        model = build_model(cfg, num_classes)
        peak_lr = optim.scale_learning_rate(cfg.learning_rate, cfg.train_batch_size,
                                            cfg.learning_rate_scaling)
        optimizer = make_optimizer(
            cfg, optim.WarmUpAndCosineDecay(peak_lr, warmup_steps, total_steps))
        global_step = optimizer.iterations

    # Restore-or-initialise: the newest checkpoint in model_dir wins; otherwise fine-tuning
    # starts from --checkpoint (encoder and projection head only).
    init_fn = None
    if cfg.checkpoint:
        init_fn = lambda: checkpoints.restore_pretrained(model, cfg.checkpoint)  # noqa: E731
    elif not pretraining:
        logging.warning("Fine-tuning without --checkpoint: the encoder starts from random "
                        "initialisation.")
    # Only the chief writes into model_dir. Other workers save their share of each
    # checkpoint (a collective operation) into a private folder that is removed at the end,
    # and resume from the chief's newest checkpoint.
    chief = strategies.is_chief()
    write_dir = cfg.model_dir if chief else tempfile.mkdtemp(prefix="simclr_tf_worker_")
    latest = tf.train.latest_checkpoint(cfg.model_dir)
    if not chief and latest:
        init_fn = lambda: checkpoints.restore_training(model, optimizer, latest)  # noqa: E731
    trainer = Trainer(cfg, strategy, model, optimizer, train_ds, total_steps, steps_per_epoch)
    train_iterator = None
    if cfg.deterministic:
        # orbit uses this iterator; its position is saved with every checkpoint, so a
        # resumed run reads the batches the interrupted one would have read next.
        train_iterator = trainer._train_iter = iter(train_ds)  # noqa: SLF001
    manager = checkpoints.make_manager(model, optimizer, write_dir, cfg.keep_checkpoint_max,
                                       checkpoint_steps, init_fn, train_iterator)
    evaluator = None
    if model.supervised_head is not None:
        eval_ds = strategy.distribute_datasets_from_function(
            lambda ctx: data_lib.build_dataset(source, cfg.eval_split, "eval",
                                               cfg.eval_batch_size, cfg.image_size, ctx))
        evaluator = evaluation.Evaluator(strategy, model, eval_ds, source.info.num_classes)
    controller = orbit.Controller(
        strategy=strategy, trainer=trainer, evaluator=evaluator, global_step=global_step,
        steps_per_loop=steps_per_loop, checkpoint_manager=manager,
        summary_interval=steps_per_loop,
        summary_dir=os.path.join(cfg.model_dir, "train") if chief else None,
        eval_summary_dir=os.path.join(cfg.model_dir, "eval") if chief else None)

    # The loop. Evaluation runs every checkpoint interval and at the end.
    print(f"{cfg.train_mode}: {num_train} training examples, batch {cfg.train_batch_size} "
          f"on {num_replicas} replica(s), {total_steps} steps ({warmup_steps} warm-up), "
          f"peak learning rate {peak_lr:.4g}", flush=True)
    start_step = int(global_step.numpy())
    if start_step:
        print(f"resumed from {manager.restored or manager.latest_checkpoint} at step "
              f"{start_step}", flush=True)
    eval_result = None
    watch = (preemption.StopOnSignals(trainer.stop_requested) if stop_on_signals
             else contextlib.nullcontext())
    rollbacks = []  # the checkpoints rolled back to, since the last new one
    try:
        with watch:
            while True:
                try:
                    if evaluator is not None:
                        eval_result = controller.train_and_evaluate(
                            total_steps, cfg.eval_steps or -1, checkpoint_steps)
                    else:
                        controller.train(total_steps)
                    break
                except NonFiniteLossError as e:
                    _roll_back(cfg, strategy, model, optimizer, trainer, manager, e, rollbacks)
    except Interrupted as e:
        own = getattr(watch, "signum", None)
        e.signum = own or e.signum
        step = int(global_step.numpy())
        e.checkpoint = manager.save_now(step)  # every worker: the save is collective
        if not chief:
            tf.io.gfile.rmtree(write_dir)
            e.checkpoint = os.path.join(cfg.model_dir, os.path.basename(e.checkpoint))
        cause = (f"{signal.Signals(e.signum).name} received" if own else
                 "a signal reached another worker")
        print(f"{cause}: {'the chief ' if not chief else ''}saved checkpoint {e.checkpoint} "
              f"at step {step}; run the same command to continue.", flush=True)
        raise

    # Final metrics: the last training loop's and the final evaluation's.
    summary_path = os.path.join(cfg.model_dir, SUMMARY_FILE)
    trained = int(global_step.numpy()) > start_step
    summary = {} if trained else _read_json(summary_path)
    if trained:
        summary.update({k: float(m.result()) for k, m in trainer.metrics.items()})
    if evaluator is not None:
        if eval_result is None:  # nothing left to train: evaluate what is there
            eval_result = controller.evaluate(cfg.eval_steps or -1)
        summary.update({k: float(eval_result[k]) for k in ("top1", "top5")})
    summary["global_step"] = int(global_step.numpy())
    if label_counts:
        summary["train_examples"] = sum(label_counts.values())
        summary["train_examples_per_class"] = label_counts
    skipped = getattr(source, "skipped", 0)
    if skipped:
        summary["skipped_files"] = skipped
        print(f"skipped {skipped} broken image file(s) in {cfg.data_dir} (the first "
              f"{min(skipped, folder.MAX_NAMED_SKIPS)} named above)", flush=True)
    if on_end is not None:
        on_end(model)
    if not chief:
        tf.io.gfile.rmtree(write_dir)
        return summary
    # Every run ends with a hub-style export of its final checkpoint (the original exported
    # nothing when pretraining without the probe).
    if cfg.keep_hub_module_max > 0:
        final = os.path.join(cfg.model_dir, export_lib.EXPORTS_SUBDIR, str(summary["global_step"]))
        if trained or not tf.io.gfile.exists(final):
            export_checkpoint(cfg, manager.latest_checkpoint, final)
            for old in export_lib.list_exports(cfg.model_dir)[:-cfg.keep_hub_module_max]:
                tf.io.gfile.rmtree(old)
        summary["saved_model"] = final
    _write_json(summary_path, summary)
    print(f"{cfg.train_mode} done: " + ", ".join(
        f"{k} = {v:.4f}" if isinstance(v, float) else f"{k} = {v}"
        for k, v in sorted(summary.items())), flush=True)
    return summary


def _training_source(cfg: config_lib.Config):
    """The source of a run with its label subset applied; whether the model gets a
    supervised head; and the labelled examples used per class ({} for all of them).

    Pretraining on unlabelled images turns the linear probe off (with a notice); what needs
    labels otherwise (fine-tuning) stops with one line naming what to give."""
    source = data_lib.get_source(cfg.dataset, cfg.data_dir, seed=cfg.seed,
                                 folder_labels=cfg.folder_labels)
    source.check_split(cfg.train_split)
    with_head = cfg.train_mode != "pretrain" or cfg.lineareval_while_pretraining
    if cfg.train_mode != "pretrain":
        sources.require_labels(source, f"{cfg.train_mode} (simclr-finetune)")
    elif with_head and not source.labelled:
        print(f"{cfg.dataset}: the images in {cfg.data_dir} have no labels (no class "
              "sub-folders): pretraining without the linear probe. Linear-evaluate the result "
              "with simclr-finetune --linear_eval --checkpoint=MODEL_DIR on a labelled folder.",
              flush=True)
        with_head = False
    if with_head:
        source.check_split(cfg.eval_split)
    source, counts = subsets.apply(source, cfg.train_split, cfg.label_subset())
    if counts:
        print(f"{cfg.train_mode}: {sum(counts.values())} labelled examples of "
              f"{len(counts)} classes ({min(counts.values())}-{max(counts.values())} per "
              "class)", flush=True)
    return source, with_head, counts


def _roll_back(cfg, strategy, model, optimizer, trainer, manager, error, rollbacks):
    """``--on_nonfinite``: ``stop`` re-raises, naming the last good checkpoint; ``rollback``
    restores it and goes on with the next batches (the one that diverged is skipped), giving
    up after MAX_ROLLBACKS rollbacks to the same checkpoint."""
    last_good = manager.latest_checkpoint
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
        checkpoints.restore_training(model, optimizer, last_good)
    trainer.first_nonfinite_step.assign(-1)
    print(f"non-finite loss at step {error.step}: rolled back to {last_good} (step "
          f"{int(optimizer.iterations.numpy())}) and skipping the batches since "
          f"(rollback {len(rollbacks)} of at most {MAX_ROLLBACKS} in a row).", flush=True)


def export_checkpoint(cfg: config_lib.Config, checkpoint_path: str, export_dir: str) -> str:
    """Exports the model of a checkpoint (a prefix or a model_dir) as a hub-style SavedModel.

    The export is always fully trainable (no frozen blocks, per-replica batch norm), whatever
    the run froze; the supervised head is included when the checkpoint has one.
    """
    prefix = checkpoints.resolve(checkpoint_path)
    export_cfg = dataclasses.replace(cfg, train_mode="finetune", linear_eval=False,
                                     fine_tune_after_block=-1, global_bn=False,
                                     precision="float32")
    model = build_model(export_cfg, checkpoints.num_classes_in(prefix))
    checkpoints.restore_for_eval(model, prefix)
    return export_lib.export_model(model, export_dir)
