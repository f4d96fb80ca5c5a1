"""SIGTERM / SIGINT (spot preemption, TPU VM maintenance, Ctrl-C): stop at the next step.

Python runs signal handlers in the main thread, and only once it is back in Python: while
a ``steps_per_loop`` loop runs inside TensorFlow that can be minutes. So the signal's byte
goes through ``signal.set_wakeup_fd`` to a watcher thread, which sets a TF variable at
once; the training loop checks that variable before every step, stops, and the program
saves a checkpoint at the step reached.
"""

import os
import signal
import threading
from typing import Optional

import tensorflow as tf

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopOnSignals:
    """``with StopOnSignals(flag):`` sets ``flag`` (a bool tf.Variable) on SIGTERM or SIGINT.

    A second signal is not caught: the process ends the ordinary way. Outside the main
    thread (where handlers cannot be installed) it does nothing.
    """

    def __init__(self, flag: tf.Variable):
        self.flag = flag
        self.signum: Optional[int] = None
        self._installed = False

    def _handler(self, signum, frame):
        # Runs in the main thread, late: the watcher has already set the flag.
        if self._seen_in_main:  # a second signal: end the ordinary way
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        self._seen_in_main = True
        self.signum = self.signum or signum

    def _watch(self):
        while True:
            try:
                data = os.read(self._read_fd, 1)
            except OSError:
                return
            if not data:
                return
            if data[0] in SIGNALS:
                self.signum = self.signum or data[0]
                self.flag.assign(True)

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        self._seen_in_main = False
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._old_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        self._old = {s: signal.signal(s, self._handler) for s in SIGNALS}
        threading.Thread(target=self._watch, daemon=True, name="simclr-signals").start()
        self._installed = True
        return self

    def __exit__(self, *exc):
        if not self._installed:
            return
        for s, old in self._old.items():
            signal.signal(s, old)
        signal.set_wakeup_fd(self._old_fd)
        os.close(self._write_fd)  # the watcher's read returns empty and it ends
        os.close(self._read_fd)
        self._installed = False


class StopFlag:
    """The stop request of a training loop, and with several workers their agreement.

    ``requested`` is set by ``StopOnSignals`` from another thread. With several workers a
    signal reaches one of them: ``now()``, called by the loop before each step, sums the
    flags of all replicas (a scalar all-reduce), so every worker stops at the same step and
    they save that checkpoint together. The agreed answer is kept apart in ``agreed``:
    only the signal watcher writes ``requested``. Create it outside any strategy scope.
    """

    def __init__(self, strategy: tf.distribute.Strategy, num_workers: int):
        self.strategy = strategy
        self.requested = tf.Variable(False, trainable=False, name="stop_requested")
        self.agreed = tf.Variable(False, trainable=False, name="stop_agreed")
        self._agree = num_workers > 1

    def now(self) -> tf.Tensor:
        """Whether to stop before the next step; with several workers, whether any must."""
        if not self._agree:
            return self.requested.read_value()
        flags = self.strategy.run(lambda: tf.cast(self.requested.read_value(), tf.int32))
        stop = self.strategy.reduce(tf.distribute.ReduceOp.SUM, flags, axis=None) > 0
        self.agreed.assign(stop)
        return stop

    def stopping(self) -> bool:
        """Whether the last loop ended on a stop request (anywhere in the cluster)."""
        return bool((self.agreed if self._agree else self.requested).numpy())
