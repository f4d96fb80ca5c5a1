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
from typing import Callable, Dict, Tuple

import tensorflow as tf

from simclr_tf.core import endpoints as ep
from simclr_tf.runs import loader
from simclr_tf.training import step_metrics as metrics_lib


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


def load_teacher(path: str, strategy: tf.distribute.Strategy) -> Teacher:
    """The teacher at ``path``: an export (a folder with saved_model.pb), or a run (its newest
    checkpoint, else its newest export) or a checkpoint prefix, built from the run's
    flags.txt; loaded under ``strategy`` so that every replica holds it."""
    with strategy.scope():
        loaded = loader.load(path, "--teacher")
    if loaded.num_classes is None:
        raise ValueError(
            f"--teacher={path!r} has no supervised head ({loaded.description} has no "
            f"{ep.LOGITS_SUP!r}): distil from a fine-tuned model, e.g. a simclr-finetune run "
            "or its export (MODEL_DIR/saved_model/STEP), or an export of simclr-convert.")

    def logits(images):
        return tf.cast(loaded.endpoints(images)[ep.LOGITS_SUP], tf.float32)

    return Teacher(logits, loaded.num_classes, loaded.description, loaded.holder)
