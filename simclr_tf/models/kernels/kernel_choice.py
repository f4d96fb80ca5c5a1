"""Which of two equivalent kernels runs faster on this machine, per layer shape: measured once.

Two layers of the ResNet have a second way to run on a CPU in float32, the same function up
to float rounding, faster on some CPUs and shapes and slower on others (docs/performance.md
has the figures):

- a small 3x3 convolution (``convs.ConvShape``) as one matmul over its patches
  (``convs.conv3x3_as_matmul``);
- a training-mode batch norm + ReLU (``cpu_batch_norm.BatchNormShape``) on sums taken as
  matmuls and a depthwise convolution (``cpu_batch_norm.batch_norm_train``), for CPUs where
  oneDNN may use AVX2 only.

A ``KernelChooser`` decides per shape: the first time a model traces a candidate layer, it
times forward + gradients of the two ways at that shape, with the real batch, alternating them,
and keeps the other way only if it is at least ``MIN_GAIN`` faster than TF's. Decisions are
kept in a JSON file under the user's cache folder, keyed by the CPU, the ISA caps, TF's version
and the thread count, so a machine measures each shape once.
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

from simclr_tf.models.kernels import convs, cpu_batch_norm

# The other way must beat TF's kernel by this factor to be chosen (below it, TF's: the same
# kernels a GPU or an export runs).
MIN_GAIN = 1.03
CACHE_VERSION = 2


def default_cache_file() -> str:
    """``$SIMCLR_TF_CACHE_DIR`` or ``$XDG_CACHE_HOME/simclr_tf`` or ``~/.cache/simclr_tf``,
    then ``kernel_choices.json``."""
    folder = os.environ.get("SIMCLR_TF_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "simclr_tf")
    return os.path.join(folder, "kernel_choices.json")


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


def _conv_pair(shape: convs.ConvShape):
    """(the matmul's, TF's) tf.functions of the convolution's output and both gradients at
    ``shape``, with the gradient ops written out (a tape may not record inside a Keras layer's
    call), and their inputs."""
    strides = [1, shape.stride, shape.stride, 1]
    padding = "SAME" if shape.stride == 1 else "VALID"
    x = tf.random.normal([shape.batch, shape.height, shape.width, shape.channels], seed=1)
    kernel = tf.random.normal([3, 3, shape.channels, shape.filters], seed=2)

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

    return (tf.function(as_matmul, autograph=False), tf.function(stock, autograph=False),
            (x, kernel, tf.nn.conv2d(x, kernel, strides, padding)))


def time_both(shape, budget_seconds: float = 2.0, min_runs: int = 3,
              max_runs: int = 9) -> Tuple[float, float]:
    """Median seconds of forward + gradients at ``shape`` (a ``convs.ConvShape`` or a
    ``cpu_batch_norm.BatchNormShape``), (the other way's, TF's), alternating the two after one
    warm-up call each; at least ``min_runs`` each, more while within the budget."""
    pair = (_conv_pair if isinstance(shape, convs.ConvShape)
            else cpu_batch_norm.timed_pair)(shape)
    steps, args = pair[:2], pair[2]
    for step in steps:  # warm-up: tracing and oneDNN's primitive creation
        _ = [t.numpy() for t in step(*args)]
    times = ([], [])
    start = time.perf_counter()
    while len(times[0]) < max_runs:
        for step, kept in zip(steps, times):
            begin = time.perf_counter()
            _ = [t.numpy() for t in step(*args)]
            kept.append(time.perf_counter() - begin)
        if len(times[0]) >= min_runs and time.perf_counter() - start > budget_seconds:
            break
    return statistics.median(times[0]), statistics.median(times[1])


class KernelChooser:
    """Decides, per shape, whether a layer runs the other way (True) or TF's kernel: called
    on a ``convs.ConvShape`` by ``convs.Conv`` for its candidates, on a
    ``cpu_batch_norm.BatchNormShape`` by the ResNet's batch norms in training.

    ``cache_file`` None keeps decisions in memory only; ``measure(shape)`` gives (the other
    way's, TF's) seconds; ``report`` prints what is measured. Measuring runs eagerly
    (``tf.init_scope``) while a step is being traced."""

    def __init__(self, cache_file: Optional[str] = None,
                 measure: Callable[[object], Tuple[float, float]] = time_both,
                 machine: Optional[str] = None, report: Callable[[str], None] = print):
        self.cache_file, self.measure, self.report = cache_file, measure, report
        self.machine = machine or machine_key()
        self._measured = 0
        self._lock = threading.Lock()
        self.decisions: Dict[str, dict] = self._read().get(self.machine, {})

    @tf.autograph.experimental.do_not_convert
    def __call__(self, shape) -> bool:
        with self._lock:
            if shape.key not in self.decisions:  # another model may have measured it since
                self.decisions.update(self._read().get(self.machine, {}))
            if shape.key not in self.decisions:
                with tf.init_scope():
                    self._measure(shape)
            return self.decisions[shape.key]["other"]

    def _measure(self, shape) -> None:
        if not self._measured:
            self.report("timing each candidate layer shape once on this machine, TF's kernel "
                        "against the other way (small convolutions as a matmul, batch norm "
                        f"on sums + a depthwise convolution; kept in "
                        f"{self.cache_file or 'memory'})")
        self._measured += 1
        other_s, tf_s = self.measure(shape)
        gain = tf_s / other_s
        self.decisions[shape.key] = {"other_ms": round(other_s * 1e3, 3),
                                     "tf_ms": round(tf_s * 1e3, 3),
                                     "gain": round(gain, 3), "other": gain >= MIN_GAIN}
        other = "matmul" if isinstance(shape, convs.ConvShape) else "sums + depthwise"
        self.report(f"  {shape.key}: {other} {gain:.2f}x TF's -> "
                    + (other if gain >= MIN_GAIN else "TF's kernel"))
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
            logging.warning("ignoring the kernel choices in %s (%s); measuring again and "
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
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".kernel_choices.")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"version": CACHE_VERSION, "machines": machines}, f, indent=1,
                          sort_keys=True)
            os.replace(tmp, self.cache_file)
        except OSError as err:
            logging.warning("cannot keep the kernel choices in %s (%s); they stay in "
                            "memory for this run", self.cache_file, err)
