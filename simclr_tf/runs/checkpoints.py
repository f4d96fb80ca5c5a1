"""Checkpoints: the manager of a run, and restoring from another run's checkpoint.

A training checkpoint holds ``model`` (encoder, projection head, supervised head) and
``optimizer`` (its slots and step). Fine-tuning initialises from a pretraining checkpoint by
object-graph matching of ``model.encoder`` and ``model.projection_head`` only: never the
optimizer, the step or the supervised head (the original restored all of them:
docs/faithfulness.md, defect 1).
"""

import os
import re
import tempfile
from typing import Callable, Optional

import tensorflow as tf
from absl import logging

from simclr_tf.models import saved_files

# What reading a truncated, missing or garbled checkpoint file raises (a checkpoint of
# another architecture raises ValueError from ``_read`` instead, and is not skipped).
_CORRUPT = (saved_files.DamagedFileError, tf.errors.OpError, IndexError, EOFError, OSError,
            UnicodeDecodeError)


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written; the earlier ones are intact."""


class RunCheckpointManager(tf.train.CheckpointManager):
    """TF's manager (a checkpoint counts once its files are written and it is recorded in the
    ``checkpoint`` state file, so ``max_to_keep`` only ever counts complete ones), plus:

    - ``restore_or_initialize`` falls back to the previous complete checkpoint, with a
      warning naming it, when the newest cannot be read (a truncated or missing file);
    - a failed write raises ``CheckpointWriteError`` naming the file and the newest
      checkpoint that is still complete.
    """

    restored: Optional[str] = None  # what restore_or_initialize read

    def save(self, checkpoint_number=None, check_interval=True, options=None):
        number = checkpoint_number
        if number is not None and not isinstance(number, int):
            number = int(number.numpy() if hasattr(number, "numpy") else number)
        previous = self.latest_checkpoint
        try:
            return super().save(checkpoint_number, check_interval, options)
        except (OSError, tf.errors.OpError) as e:
            raise CheckpointWriteError(
                f"could not write checkpoint {self._prefix}-{number} ({type(e).__name__}: "
                f"{str(e)[:300]}). The earlier checkpoints are intact (newest complete: "
                f"{previous}); free space or fix the folder, then run the same command to "
                "resume.") from e

    def save_now(self, step: int) -> str:
        """A checkpoint at ``step`` now, whatever the interval (SIGTERM): its prefix."""
        if self.latest_checkpoint and self.latest_checkpoint.endswith(f"-{step}"):
            return self.latest_checkpoint
        self._last_checkpoint_step = None  # TF's manager skips a step it saved already
        return self.save(checkpoint_number=step, check_interval=False)

    def restore_or_initialize(self):
        recorded = list(reversed(self.checkpoints))  # newest first, complete ones only
        for prefix in recorded:
            try:
                _read(self.checkpoint, prefix, "the training state")
            except _CORRUPT as e:
                message = (f"checkpoint {prefix} is unreadable ({type(e).__name__}: "
                           f"{str(e)[:200]}); using the previous complete one.")
                logging.warning(message)
                print(f"warning: {message}", flush=True)
                continue
            if self._checkpoint_interval is not None:
                self._last_checkpoint_step = int(self._step_counter.numpy())
            self.restored = prefix
            return prefix
        if recorded:
            raise ValueError(f"no checkpoint in {self.directory} can be read ({recorded}); "
                             "move the folder aside to start again.")
        if self._init_fn is not None:
            self._init_fn()
        if self._checkpoint_interval is not None:
            # Count the interval from the start, so checkpoints fall on its multiples (TF's
            # manager would save at the end of the first loop, then count from there).
            self._last_checkpoint_step = int(self._step_counter.numpy())
        return None


def make_manager(model, optimizer, model_dir: str, max_to_keep: int, interval: int,
                 init_fn: Optional[Callable[[], None]] = None,
                 train_iterator=None) -> RunCheckpointManager:
    """The run's manager: ``model_dir/ckpt-<step>``, the newest ``max_to_keep`` complete.

    With ``train_iterator`` the input position (and shuffle buffer) is saved too."""
    extra = {} if train_iterator is None else {"train_iterator": train_iterator}
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, **extra)
    return RunCheckpointManager(
        checkpoint, directory=model_dir, max_to_keep=max_to_keep,
        step_counter=optimizer.iterations, checkpoint_interval=interval, init_fn=init_fn)


def remove_partial_writes(model_dir: str) -> int:
    """Deletes what interrupted checkpoint writes left (``ckpt-N_temp*``); never a recorded
    checkpoint. Call it only while holding the run's lock. Returns how many were removed."""
    removed = 0
    for path in tf.io.gfile.glob(os.path.join(model_dir, "ckpt-*_temp*")):
        if re.search(r"ckpt-\d+_temp", os.path.basename(path.rstrip("/"))):
            if tf.io.gfile.isdir(path):
                tf.io.gfile.rmtree(path)
            else:
                tf.io.gfile.remove(path)
            removed += 1
    return removed


def resolve(path: str) -> str:
    """A checkpoint prefix from a prefix, a run's model_dir, or an exported SavedModel dir.

    Raises:
      ValueError: naming the path, when there is no checkpoint there.
    """
    if tf.io.gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest:
            return latest
        saved_model_vars = tf.io.gfile.join(path, "variables", "variables")
        if tf.io.gfile.exists(saved_model_vars + ".index"):
            return saved_model_vars
        raise ValueError(f"--checkpoint={path!r} is a folder without a checkpoint; give a "
                         "model_dir of a run that saved one, or a prefix like DIR/ckpt-1000.")
    if tf.io.gfile.exists(path + ".index"):
        return path
    raise ValueError(f"--checkpoint={path!r} does not exist; give a run's model_dir or a "
                     "checkpoint prefix like DIR/ckpt-1000 (the path without .index).")


def _read(checkpoint: tf.train.Checkpoint, prefix: str, what: str):
    """Restores ``checkpoint`` from ``prefix``; a damaged file (``DamagedFileError``) or
    another architecture (ValueError naming the variables that differ) in one line."""
    saved_files.check_bundle(prefix, f"cannot restore {what}")
    try:
        with saved_files.reading(prefix, f"cannot restore {what}"):
            status = checkpoint.read(prefix)
        status.assert_existing_objects_matched()
    except saved_files.DamagedFileError:
        raise
    except (ValueError, AssertionError, tf.errors.InvalidArgumentError) as e:
        raise ValueError(
            f"cannot restore {what} from {prefix!r}: the checkpoint holds another architecture "
            "(check --resnet_depth, --width_multiplier, --sk_ratio, --proj_head_mode, "
            f"--num_proj_layers, --proj_out_dim, --image_size). "
            f"{_differences(checkpoint, prefix) or str(e)[:500]}") from e
    return status.expect_partial()


def _differences(checkpoint: tf.train.Checkpoint, prefix: str, limit: int = 5) -> str:
    """The variables whose shapes differ between ``checkpoint``'s objects and the file."""
    tmp = tempfile.mkdtemp(prefix="simclr_tf_shapes_")
    try:
        ours = dict(tf.train.list_variables(checkpoint.write(os.path.join(tmp, "model"))))
    except Exception:  # noqa: BLE001 (only an explanation is lost)
        return ""
    finally:
        tf.io.gfile.rmtree(tmp)
    theirs = dict(tf.train.list_variables(prefix))
    differ, missing = [], []
    for key, shape in sorted(ours.items()):
        if key.startswith("_CHECKPOINTABLE") or "OPTIMIZER_SLOT" in key:
            continue
        name = key.replace("/.ATTRIBUTES/VARIABLE_VALUE", "")
        if key not in theirs:
            missing.append(name)
        elif list(theirs[key]) != list(shape):
            differ.append(f"{name} is {list(theirs[key])} in the checkpoint, {list(shape)} here")
    parts = []
    if differ:
        parts.append(f"{len(differ)} variable(s) differ in shape: " + "; ".join(differ[:limit]))
    if missing:
        parts.append(f"{len(missing)} are missing from the checkpoint: "
                     + ", ".join(missing[:limit]))
    return ". ".join(parts) + ("." if parts else "")


def restore_pretrained(model, path: str) -> str:
    """Loads the encoder and projection head of ``model`` from the checkpoint at ``path``."""
    prefix = resolve(path)
    parts = tf.train.Checkpoint(encoder=model.encoder, projection_head=model.projection_head)
    _read(tf.train.Checkpoint(model=parts), prefix, "the encoder and projection head")
    print(f"initialised the encoder and projection head from {prefix}", flush=True)
    return prefix


def restore_training(model, optimizer, prefix: str) -> str:
    """Loads a run's whole training state (model, optimizer slots, step) from ``prefix``."""
    _read(tf.train.Checkpoint(model=model, optimizer=optimizer), prefix, "the training state")
    return prefix


def restore_for_eval(model, path: str) -> str:
    """Loads the whole model (supervised head included) from ``path``."""
    prefix = resolve(path)
    _read(tf.train.Checkpoint(model=model), prefix, "the model")
    return prefix


SUPERVISED_KERNEL = "model/supervised_head/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE"


def num_classes_in(prefix: str) -> Optional[int]:
    """The class count of the checkpoint's supervised head, or None when it has none."""
    shapes = dict(tf.train.list_variables(prefix))
    shape = shapes.get(SUPERVISED_KERNEL)
    return int(shape[-1]) if shape else None
