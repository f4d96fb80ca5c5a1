"""The orbit adapter around the step: ``steps_per_loop`` steps in one tf.function, the
metrics of a loop, the stop request, the non-finite guard and the progress line.

The step itself is ``step.make_replica_step``; this module only runs it.
"""

import contextlib
import io
import re
import signal
import sys
import time
from typing import Callable, Dict, List, Optional

import orbit
import tensorflow as tf
import tf_keras as keras
from absl import logging

from simclr_tf.core import step_plan
from simclr_tf.training import optim, preemption


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


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def progress_line(step: int, plan: step_plan.StepPlan, logs: Dict[str, float], main_metric: str,
                  examples_per_sec: float) -> str:
    """``step 40/100 | epoch 0.80 | loss 4.1234 | contrast_acc 0.250 | 512.0 examples/s |
    ETA 0:01:02``: one line per loop."""
    remaining = (plan.total - step) * plan.batch_size / max(examples_per_sec, 1e-9)
    extra = f" | {main_metric} {logs[main_metric]:.3f}" if main_metric in logs else ""
    return (f"step {step}/{plan.total} | epoch {plan.epoch(step):.2f} | loss {logs['loss']:.4f}"
            f"{extra} | {examples_per_sec:.1f} examples/s | ETA {format_duration(remaining)}")


# The lines orbit's controller prints on its own (each loop's whole output dict, the
# checkpoint and restore notices): the progress line says the same in one line.
_ORBIT_LINE = re.compile(r" ?(train|eval) \| step: |saved checkpoint to |restor(ing|ed) ")


class _OrbitToLog(io.TextIOBase):
    """A stdout that sends orbit's own report lines to the INFO log and writes the rest
    through (``print`` writes a message, then its newline: both go the same way)."""

    def __init__(self, out):
        super().__init__()
        self.out, self._drop_newline = out, False

    def write(self, text: str) -> int:
        if _ORBIT_LINE.match(text):
            logging.info(text)
            self._drop_newline = True
            return len(text)
        dropped, self._drop_newline = self._drop_newline and text == "\n", False
        return len(text) if dropped else self.out.write(text)

    def flush(self):
        self.out.flush()


@contextlib.contextmanager
def quiet_orbit():
    """Inside, orbit's controller reports to the INFO log instead of stdout."""
    with contextlib.redirect_stdout(_OrbitToLog(sys.stdout)):
        yield


class Trainer(orbit.StandardTrainer):
    """Runs ``replica_step`` (``step.make_replica_step``) on every replica, ``per_loop``
    steps per call; averages its metrics over each loop and prints a progress line."""

    def __init__(self, strategy: tf.distribute.Strategy, replica_step: Callable,
                 optimizer: keras.optimizers.Optimizer, metric_names: List[str], dataset,
                 plan: step_plan.StepPlan, stop: preemption.StopFlag, main_metric: str):
        self.strategy, self.replica_step, self.optimizer = strategy, replica_step, optimizer
        self.plan, self.stop, self.main_metric = plan, stop, main_metric
        with strategy.scope():
            self.metrics = {n: keras.metrics.Mean(n, dtype=tf.float32) for n in metric_names}
            self.first_nonfinite_step = tf.Variable(-1, dtype=tf.int64, trainable=False)
        self._loop_start = None
        super().__init__(dataset, orbit.StandardTrainerOptions(use_tf_while_loop=True))

    def create_train_loop_fn(self):
        """orbit's loop of ``num_steps`` steps in one tf.function, ending early (before the
        next step) once a stop is requested."""

        def loop_fn(iterator, num_steps):
            def keep_going(i, stop):
                return tf.logical_and(i < tf.cast(num_steps, tf.int32), tf.logical_not(stop))

            def body(i, stop):
                del stop
                with tf.name_scope(""):
                    self.train_step(iterator)
                return i + 1, self.stop.now()

            tf.while_loop(keep_going, body, [tf.constant(0), self.stop.now()])

        return tf.function(loop_fn)

    def train_loop_begin(self):
        for metric in self.metrics.values():
            metric.reset_state()
        self._loop_start = (time.time(), int(self.optimizer.iterations.numpy()))

    def _replica_fn(self, inputs):
        loss, metrics = self.replica_step(inputs)
        for name, value in metrics.items():
            self.metrics[name].update_state(value)
        return loss

    def train_step(self, iterator):
        loss = self.strategy.run(self._replica_fn, args=(next(iterator),))
        loss = self.strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        bad = tf.logical_and(tf.logical_not(tf.math.is_finite(loss)),
                             self.first_nonfinite_step < 0)
        self.first_nonfinite_step.assign(
            tf.where(bad, self.optimizer.iterations, self.first_nonfinite_step))

    def train_loop_end(self) -> Dict[str, float]:
        step = int(self.optimizer.iterations.numpy())
        if self.stop.stopping():
            raise Interrupted(signal.SIGTERM, step)  # the program puts in the signal received
        bad_step = int(self.first_nonfinite_step.numpy())
        if bad_step >= 0:
            raise NonFiniteLossError(
                f"the training loss became non-finite at step {bad_step} (loss "
                f"{float(self.metrics['loss'].result()):.4g}); stopping before it is saved. "
                "Lower --learning_rate, check the data, or resume from the last checkpoint.",
                bad_step)
        logs = {n: float(m.result()) for n, m in self.metrics.items()}
        logs["learning_rate"] = optim.current_learning_rate(self.optimizer)
        start_time, start_step = self._loop_start
        elapsed = max(time.time() - start_time, 1e-9)
        logs["examples_per_sec"] = (step - start_step) * self.plan.batch_size / elapsed
        print(progress_line(step, self.plan, logs, self.main_metric, logs["examples_per_sec"]),
              flush=True)
        return logs
