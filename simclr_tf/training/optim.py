"""Optimisation: LARS / momentum / Adam, learning-rate scaling and schedule, weight decay.

The facts are in docs/method.md. LARS is Model Garden's (``official.modeling.optimization.lars``),
which excludes variables by regular expressions searched in their names. The layer names of
``heads.py`` and ``resnet.py`` make the exclusion list below exact: every batch-norm variable
contains ``batch_normalization``, the only biases are the supervised head's and the supervised
head is the only layer named ``head_supervised``.
"""

import math
from typing import Iterable

import tensorflow as tf
import tf_keras as keras

from simclr_tf.core import choices, step_plan

# Regexes searched in variable names: excluded from weight decay and from layer adaptation.
EXCLUDE_FROM_WEIGHT_DECAY = ("batch_normalization", "bias", "head_supervised")
LARS_EETA = 0.001
SUPERVISED_HEAD = "head_supervised"


def scale_learning_rate(learning_rate: float, batch_size: int, scaling: str) -> float:
    """The peak learning rate: lr * B / 256 (``linear``) or lr * sqrt(B) (``sqrt``)."""
    if scaling == "linear":
        return learning_rate * batch_size / 256.0
    if scaling == "sqrt":
        return learning_rate * math.sqrt(batch_size)
    raise ValueError(
        f"learning_rate_scaling={scaling!r} is not supported; use one of {choices.LR_SCALINGS}.")


class WarmUpAndCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then cosine decay to 0.

    lr(t) = peak * t / W for t < W, then peak * (1 + cos(pi * (t - W) / (T - W))) / 2,
    and 0 from t = T on.
    """

    def __init__(self, peak: float, warmup_steps: int, total_steps: int, name: str = "lr"):
        super().__init__()
        if total_steps <= 0 or warmup_steps < 0:
            raise ValueError(
                f"need total_steps > 0 and warmup_steps >= 0; got total_steps={total_steps}, "
                f"warmup_steps={warmup_steps}.")
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.name = name

    def __call__(self, step):
        with tf.name_scope(self.name):
            step = tf.cast(step, tf.float32)
            warmup = float(self.warmup_steps)
            decay_steps = float(max(self.total_steps - self.warmup_steps, 1))
            progress = tf.clip_by_value((step - warmup) / decay_steps, 0.0, 1.0)
            cosine = self.peak * 0.5 * (1.0 + tf.cos(math.pi * progress))
            if self.warmup_steps == 0:
                return cosine
            return tf.where(step < warmup, self.peak * step / warmup, cosine)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps, "name": self.name}


def build_optimizer(name: str, learning_rate, momentum: float = 0.9,
                    weight_decay: float = 0.0, eeta: float = LARS_EETA):
    """The optimizer of the original's ``--optimizer`` flag.

    Args:
      name: ``lars`` (Model Garden LARS, classic momentum, weight decay inside, the exclusion
        list above), ``momentum`` (SGD with Nesterov momentum) or ``adam``.
      learning_rate: a float or a schedule.
      momentum: the momentum of LARS and SGD.
      weight_decay: LARS's ``weight_decay_rate``. Other optimizers ignore it: their decay is
        added to the loss by ``weight_decay_loss``.
      eeta: LARS's trust coefficient.
    """
    if name == "lars":
        from official.modeling.optimization import lars  # noqa: PLC0415 (heavy import)
        return lars.LARS(
            learning_rate=learning_rate, momentum=momentum, weight_decay_rate=weight_decay,
            eeta=eeta, nesterov=False, classic_momentum=True,
            exclude_from_weight_decay=list(EXCLUDE_FROM_WEIGHT_DECAY),
            exclude_from_layer_adaptation=list(EXCLUDE_FROM_WEIGHT_DECAY))
    if name == "momentum":
        return keras.optimizers.legacy.SGD(learning_rate, momentum=momentum, nesterov=True)
    if name == "adam":
        return keras.optimizers.legacy.Adam(learning_rate)
    raise ValueError(f"optimizer={name!r} is not supported; use one of {choices.OPTIMIZERS}.")


def make_optimizer(cfg, learning_rate) -> keras.optimizers.Optimizer:
    """The optimizer of ``cfg`` (a ``config.Config``) with ``learning_rate`` (a schedule or
    a float); float16 adds loss scaling. Call it inside the strategy's scope."""
    optimizer = build_optimizer(cfg.optimizer, learning_rate, cfg.momentum, cfg.weight_decay)
    if cfg.precision == "mixed_float16":
        optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
    _ = optimizer.iterations  # created here, in the scope, not lazily inside the first step
    return optimizer


def run_optimizer(cfg, plan: step_plan.StepPlan) -> keras.optimizers.Optimizer:
    """The training optimizer of ``cfg``: the scaled peak learning rate with warm-up and
    cosine decay over ``plan``. Call it inside the strategy's scope."""
    peak = scale_learning_rate(cfg.learning_rate, cfg.train_batch_size,
                               cfg.learning_rate_scaling)
    return make_optimizer(cfg, WarmUpAndCosineDecay(peak, plan.warmup, plan.total))


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The learning rate at the optimizer's current step."""
    lr = optimizer.learning_rate
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        lr = lr(optimizer.iterations)
    return float(lr)


def weight_decay_loss(variables: Iterable[tf.Variable], weight_decay: float,
                      optimizer_name: str) -> tf.Tensor:
    """The decay term added to the loss: ``weight_decay * sum(0.5 * w^2)``.

    With LARS the optimizer decays the encoder and projection head itself, so only the
    supervised head's kernel is decayed here; with other optimizers every variable except
    batch norm's is.
    """
    if not weight_decay:
        return tf.constant(0.0)
    if optimizer_name == "lars":
        chosen = [v for v in variables
                  if SUPERVISED_HEAD in v.name and "bias" not in v.name]
    else:
        chosen = [v for v in variables if "batch_normalization" not in v.name]
    if not chosen:
        return tf.constant(0.0)
    return weight_decay * tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in chosen])
