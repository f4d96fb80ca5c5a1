"""Which small convolutions run faster as a matmul on this machine: measured once, cached.

The gain of ``convs.conv3x3_as_matmul`` over TF's oneDNN kernels depends on the CPU (1.27x at
4 x 4 px on an AVX-512 Xeon, below 1x for some shapes under AVX2: docs/performance.md). A
``ConvChooser`` decides per shape: the first time a model traces a candidate convolution
(few output positions), it times forward + both gradients of the two ways at that shape, with
the real batch, alternating them, and keeps the faster (TF's unless the matmul is at least
``MIN_GAIN`` faster). Decisions are kept in a JSON file under the user's cache folder, keyed by
the CPU, the ISA caps, TF's version and the thread count, so a machine measures each shape once.
"""

import json
import os
import platform
import statistics
import tempfile
import threading
import time
from typing import Callable, Dict, Optional, Tuple

import tensorflow as tf
from absl import logging

from simclr_tf import convs
from simclr_tf.convs import ConvShape

# The matmul must beat TF's kernels by this factor to be chosen (below it, TF's: the same
# kernels a GPU or an export runs).
MIN_GAIN = 1.03
CACHE_VERSION = 1


def default_cache_file() -> str:
    """``$SIMCLR_TF_CACHE_DIR`` or ``$XDG_CACHE_HOME/simclr_tf`` or ``~/.cache/simclr_tf``,
    then ``conv_choices.json``."""
    folder = os.environ.get("SIMCLR_TF_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "simclr_tf")
    return os.path.join(folder, "conv_choices.json")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key() -> str:
    """What the measurement depends on besides the shape: CPU, ISA caps, TF, threads."""
    caps = ",".join(f"{name}={os.environ[name]}" for name in (
        "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
        "TF_ENABLE_ONEDNN_OPTS") if os.environ.get(name))
    threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    return f"{_cpu_name()} | {caps or 'no caps'} | TF {tf.__version__} | {threads} threads"


def _step(shape: ConvShape, matmul: bool):
    """A tf.function giving the convolution's output and both gradients at ``shape``, with
    the gradient ops written out (a tape may not record inside a Keras layer's call)."""
    strides = [1, shape.stride, shape.stride, 1]
    padding = "SAME" if shape.stride == 1 else "VALID"

    def stock(x, kernel, dy):
        y = tf.nn.conv2d(x, kernel, strides, padding)
        dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=kernel,
                                            out_backprop=dy, strides=strides, padding=padding)
        dkernel = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=tf.shape(kernel),
                                                  out_backprop=dy, strides=strides,
                                                  padding=padding)
        return y, dx, dkernel

    def as_matmul(x, kernel, dy):
        y, patches = convs.matmul_forward(x, kernel, shape.stride)
        return (y,) + convs.matmul_backward(dy, patches, x, kernel, shape.stride)

    return tf.function(as_matmul if matmul else stock, jit_compile=False, autograph=False)


def time_both(shape: ConvShape, budget_seconds: float = 2.0,
              min_runs: int = 3, max_runs: int = 9) -> Tuple[float, float]:
    """Median seconds of forward + both gradients, (matmul, TF's), alternating the two after
    one warm-up call each; at least ``min_runs`` each, more while within the budget."""
    x = tf.random.normal([shape.batch, shape.height, shape.width, shape.channels], seed=1)
    kernel = tf.random.normal([3, 3, shape.channels, shape.filters], seed=2)
    steps = (_step(shape, True), _step(shape, False))
    dy = tf.nn.conv2d(x, kernel, [1, shape.stride, shape.stride, 1],
                      "SAME" if shape.stride == 1 else "VALID")
    for step in steps:  # warm-up: tracing and oneDNN's primitive creation
        _ = [t.numpy() for t in step(x, kernel, dy)]
    times = ([], [])
    start = time.perf_counter()
    while len(times[0]) < max_runs:
        for step, kept in zip(steps, times):
            begin = time.perf_counter()
            _ = [t.numpy() for t in step(x, kernel, dy)]
            kept.append(time.perf_counter() - begin)
        if len(times[0]) >= min_runs and time.perf_counter() - start > budget_seconds:
            break
    return statistics.median(times[0]), statistics.median(times[1])


class ConvChooser:
    """Decides, per ``ConvShape``, whether ``convs.Conv`` runs it as a matmul (callable on the
    shape; ``convs.Conv`` asks only for the candidates, ``convs.CANDIDATE_MAX_POSITIONS``).

    ``cache_file`` None keeps decisions in memory only; ``measure(shape)`` gives (matmul, TF's)
    seconds; ``report`` prints what is measured. Measuring runs eagerly (``tf.init_scope``)
    while a step is being traced."""

    def __init__(self, cache_file: Optional[str] = None,
                 measure: Callable[[ConvShape], Tuple[float, float]] = time_both,
                 machine: Optional[str] = None, report: Callable[[str], None] = print):
        self.cache_file, self.measure, self.report = cache_file, measure, report
        self.machine = machine or machine_key()
        self._measured = 0
        self._lock = threading.Lock()
        self.decisions: Dict[str, dict] = self._read().get(self.machine, {})

    @tf.autograph.experimental.do_not_convert
    def __call__(self, shape: ConvShape) -> bool:
        with self._lock:
            if shape.key not in self.decisions:
                with tf.init_scope():
                    self._measure(shape)
            return self.decisions[shape.key]["matmul"]

    def _measure(self, shape: ConvShape) -> None:
        if not self._measured:
            self.report("small convolutions: timing each shape once on this machine, as a "
                        f"matmul and with TF's kernel (kept in {self.cache_file or 'memory'})")
        self._measured += 1
        matmul_s, stock_s = self.measure(shape)
        gain = stock_s / matmul_s
        self.decisions[shape.key] = {"matmul_ms": round(matmul_s * 1e3, 3),
                                     "stock_ms": round(stock_s * 1e3, 3),
                                     "gain": round(gain, 3), "matmul": gain >= MIN_GAIN}
        self.report(f"  {shape.key}: the matmul {gain:.2f}x TF's -> "
                    + ("matmul" if gain >= MIN_GAIN else "TF's kernel"))
        self._write(shape.key)

    def _read(self) -> dict:
        if not self.cache_file or not os.path.exists(self.cache_file):
            return {}
        try:
            with open(self.cache_file, encoding="utf-8") as f:
                data = json.load(f)
            if data.get("version") != CACHE_VERSION:
                raise ValueError(f"version {data.get('version')!r}, not {CACHE_VERSION}")
            return data["machines"]
        except (OSError, ValueError, KeyError, AttributeError) as err:
            logging.warning("ignoring the convolution choices in %s (%s); measuring again and "
                            "rewriting it", self.cache_file, err)
            return {}

    def _write(self, key: str) -> None:
        """Adds ``key``'s decision to the file as it is now (another process may have added
        others), atomically; a folder that cannot be written keeps decisions in memory."""
        if not self.cache_file:
            return
        machines = self._read()
        machines.setdefault(self.machine, {})[key] = self.decisions[key]
        folder = os.path.dirname(os.path.abspath(self.cache_file))
        try:
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".conv_choices.")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"version": CACHE_VERSION, "machines": machines}, f, indent=1,
                          sort_keys=True)
            os.replace(tmp, self.cache_file)
        except OSError as err:
            logging.warning("cannot keep the convolution choices in %s (%s); they stay in "
                            "memory for this run", self.cache_file, err)
