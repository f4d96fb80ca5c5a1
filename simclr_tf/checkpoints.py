"""Checkpoints: the manager of a run, and restoring from another run's checkpoint.

A training checkpoint holds ``model`` (encoder, projection head, supervised head) and
``optimizer`` (its slots and step). Fine-tuning initialises from a pretraining checkpoint by
object-graph matching of ``model.encoder`` and ``model.projection_head`` only: never the
optimizer, the step or the supervised head (the original restored all of them, SPEC.md §8.1).
"""

from typing import Callable, Optional

import tensorflow as tf


def make_manager(model, optimizer, model_dir: str, max_to_keep: int, interval: int,
                 init_fn: Optional[Callable[[], None]] = None) -> tf.train.CheckpointManager:
    """The run's CheckpointManager: ``model_dir/ckpt-<step>``, the newest ``max_to_keep``."""
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    return tf.train.CheckpointManager(
        checkpoint, directory=model_dir, max_to_keep=max_to_keep,
        step_counter=optimizer.iterations, checkpoint_interval=interval, init_fn=init_fn)


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
    try:
        status = checkpoint.read(prefix)
        status.assert_existing_objects_matched()
    except (ValueError, AssertionError, tf.errors.InvalidArgumentError) as e:
        raise ValueError(
            f"cannot restore {what} from {prefix!r}: the checkpoint holds another architecture "
            "(check --resnet_depth, --width_multiplier, --sk_ratio, --proj_head_mode, "
            f"--num_proj_layers, --proj_out_dim, --image_size): {str(e)[:500]}") from e
    return status.expect_partial()


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
