"""SimCLRv2's third stage: a student learns the predictions of a fixed teacher.

The SimCLRv2 paper (Chen et al. 2020b, section 2, Eq. 2 and 3) trains the student on
unlabelled images with the cross-entropy against the teacher's tempered distribution,
optionally joined by the cross-entropy with the labels of the labelled examples::

    L = -(1 - a) sum_{(x, y) in D_L} log P_S(y | x)
        - a sum_{x in D} sum_y P_T(y | x; tau) log P_S(y | x; tau),
    P(y | x; tau) = softmax(logits(x) / tau)

Here a batch is a sample of D (every training image); the examples of the labelled subset
carry their label and the others -1, so both sums are divided by the batch size: the loss
of a batch is an unbiased estimate of L / |D|. ``a`` = 1 is distillation alone (the paper's
setting for its headline figures); there is no tau^2 factor (the paper has none).

The teacher is an export of this project (``simclr-finetune``'s, or ``simclr-convert``'s of
an original model) or a run's checkpoint; it runs in inference mode inside the training
step, on every replica, and is never trained or saved with the student.
"""

import dataclasses
import os
from typing import Callable, Dict, Tuple

import tensorflow as tf

from simclr_tf import checkpoints
from simclr_tf import endpoints as ep
from simclr_tf import metrics as metrics_lib
from simclr_tf import rundir


def distillation_loss(teacher_logits: tf.Tensor, student_logits: tf.Tensor,
                      temperature: float) -> tf.Tensor:
    """Mean over the batch of -sum_y P_T(y; tau) log P_S(y; tau): no gradient to the teacher."""
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0.")
    teacher = tf.nn.softmax(tf.stop_gradient(tf.cast(teacher_logits, tf.float32)) / temperature)
    student = tf.cast(student_logits, tf.float32) / temperature
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(teacher, student))


def labelled_cross_entropy(labels: tf.Tensor, student_logits: tf.Tensor) -> tf.Tensor:
    """Sum of the cross-entropies of the rows with a label (>= 0), over the batch size."""
    labels = tf.cast(labels, tf.int32)
    labelled = labels >= 0
    per_row = tf.nn.sparse_softmax_cross_entropy_with_logits(
        tf.maximum(labels, 0), tf.cast(student_logits, tf.float32))
    return tf.reduce_sum(tf.where(labelled, per_row, 0.0)) / tf.cast(tf.size(labels),
                                                                     tf.float32)


def teacher_agreement(teacher_logits: tf.Tensor, student_logits: tf.Tensor) -> tf.Tensor:
    """Fraction of rows whose top-1 class is the teacher's."""
    return metrics_lib.top_k_accuracy(tf.argmax(teacher_logits, axis=-1), student_logits, 1)


def compute_losses(teacher_logits: tf.Tensor, student_logits: tf.Tensor, labels: tf.Tensor,
                   temperature: float, weight: float) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    """The loss of one replica's batch (Eq. 3 with ``weight`` = a) and its metrics."""
    distill = distillation_loss(teacher_logits, student_logits, temperature)
    metrics = {"distill_loss": distill,
               "teacher_agreement": teacher_agreement(teacher_logits, student_logits)}
    loss = weight * distill
    if weight < 1.0:
        label_loss = labelled_cross_entropy(labels, student_logits)
        metrics["label_loss"] = label_loss
        loss += (1.0 - weight) * label_loss
    return loss, metrics


def metric_names(weight: float):
    """The metrics of a distillation step beside loss and weight_decay."""
    return ["distill_loss", "teacher_agreement"] + (["label_loss"] if weight < 1.0 else [])


@dataclasses.dataclass
class Teacher:
    """A fixed classifier: ``logits(images)`` (float images [B, H, W, 3] in [0, 1])."""

    logits: Callable[[tf.Tensor], tf.Tensor]
    num_classes: int
    description: str  # what was loaded, for the run's first lines
    holder: object = None  # keeps the loaded SavedModel or Keras model alive


def _is_export(path: str) -> bool:
    return tf.io.gfile.exists(os.path.join(path, "saved_model.pb"))


def _export_teacher(path: str) -> Teacher:
    module = tf.saved_model.load(path)
    outputs = getattr(module, "signatures", {}).get("serving_default")
    specs = outputs.structured_outputs if outputs is not None else {}
    if ep.LOGITS_SUP not in specs:
        raise ValueError(
            f"--teacher={path!r} has no supervised head ({ep.LOGITS_SUP!r} is not among its "
            f"outputs {sorted(specs)}): distil from a fine-tuned model, e.g. the export of "
            "simclr-finetune (MODEL_DIR/saved_model/STEP) or of simclr-convert.")

    def logits(images):
        return tf.cast(module(images, training=False)[ep.LOGITS_SUP], tf.float32)

    return Teacher(logits, int(specs[ep.LOGITS_SUP].shape[-1]), f"export {path}", module)


def _checkpoint_teacher(path: str, run_cfg) -> Teacher:
    from simclr_tf import export as export_lib  # noqa: PLC0415 (export imports the model)

    prefix = checkpoints.resolve(path)
    num_classes = checkpoints.num_classes_in(prefix)
    if num_classes is None:
        raise ValueError(f"--teacher={path!r}: checkpoint {prefix} has no supervised head; "
                         "distil from a fine-tuned model (a simclr-finetune run).")
    model = export_lib.checkpoint_model(run_cfg, prefix)
    model.trainable = False

    def logits(images):
        return tf.cast(model(images, training=False)[ep.LOGITS_SUP], tf.float32)

    return Teacher(logits, num_classes, f"checkpoint {prefix}", model)


def load_teacher(path: str, strategy: tf.distribute.Strategy) -> Teacher:
    """The teacher at ``path``: an export (a folder with saved_model.pb), or a run (its newest
    checkpoint, else its newest export) or a checkpoint prefix, built from the run's
    flags.txt; loaded under ``strategy`` so that every replica holds it."""
    from simclr_tf import export as export_lib  # noqa: PLC0415

    prefix = bool(path) and tf.io.gfile.exists(path + ".index")  # a checkpoint's prefix
    if not path or not (prefix or tf.io.gfile.exists(path)):
        raise ValueError(f"--teacher={path!r} does not exist; give an export (a folder with "
                         "saved_model.pb), the folder of a fine-tuning run, or a checkpoint.")
    with strategy.scope():
        if _is_export(path):
            return _export_teacher(path)
        has_checkpoint = prefix or (tf.io.gfile.isdir(path) and tf.train.latest_checkpoint(path))
        if has_checkpoint:
            flagfile = rundir.settings_file(path)
            if not flagfile:
                raise ValueError(f"--teacher={path!r}: a checkpoint without its run's flags.txt "
                                 "(which says its architecture); give the run's folder or an "
                                 "export of it.")
            return _checkpoint_teacher(path, rundir.read_settings(flagfile))
        exports = export_lib.list_exports(path) if tf.io.gfile.isdir(path) else []
        if exports:
            return _export_teacher(exports[-1])
    raise ValueError(f"--teacher={path!r} holds no export (saved_model.pb) and no checkpoint.")
