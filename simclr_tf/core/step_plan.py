"""A run's durations in steps: where ``--*_epochs`` and ``--*_steps`` become step counts
(the training loop's length, warm-up, checkpoint interval, steps per ``tf.function`` call)."""

import dataclasses
from typing import Optional


def epochs_to_steps(epochs: float, num_examples: int, batch_size: int) -> int:
    """Steps in ``epochs`` passes over ``num_examples`` at global batch ``batch_size``.

    As the original: ``int(epochs * num_examples // batch_size)`` (rounded down).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size={batch_size} must be positive.")
    return int(epochs * num_examples // batch_size)


def total_train_steps(num_examples: Optional[int], batch_size: int, epochs: float,
                      train_steps: int = 0) -> int:
    """``train_steps`` when positive, else ``num_examples * epochs // batch_size + 1``."""
    if train_steps and train_steps > 0:
        return int(train_steps)
    if not num_examples:
        raise ValueError(
            "the number of training examples is unknown, so --train_epochs cannot be turned "
            "into steps; give --train_steps.")
    return epochs_to_steps(epochs, num_examples, batch_size) + 1


@dataclasses.dataclass(frozen=True)
class StepPlan:
    """A run's durations in steps, made from its config by ``plan_steps`` (the one place
    where epochs become steps)."""

    num_examples: int  # training examples per epoch
    batch_size: int
    total: int  # the last step
    warmup: int
    checkpoint: int  # steps between checkpoints (and evaluations)
    per_loop: int  # steps inside one tf.function call

    def epoch(self, step: int) -> float:
        """The epochs of training done after ``step`` steps."""
        return step * self.batch_size / max(self.num_examples, 1)


def plan_steps(cfg, num_examples: int) -> StepPlan:
    """The step counts of ``cfg`` (a ``config.Config``) for ``num_examples`` per epoch:
    ``--*_steps`` win over ``--*_epochs`` when > 0; epochs round down, as the original."""
    batch = cfg.train_batch_size
    total = total_train_steps(num_examples, batch, cfg.train_epochs, cfg.train_steps)
    checkpoint = cfg.checkpoint_steps or max(
        1, epochs_to_steps(cfg.checkpoint_epochs, num_examples, batch))
    return StepPlan(num_examples=num_examples, batch_size=batch, total=total,
                    warmup=epochs_to_steps(cfg.warmup_epochs, num_examples, batch),
                    checkpoint=checkpoint,
                    per_loop=min(cfg.steps_per_loop or checkpoint, total))
