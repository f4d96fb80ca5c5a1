"""``simclr-bench --parts=loss_scaling``: NT-Xent and the whole step against the batch.

NT-Xent compares every view with every other view of the global batch: on each replica its
logits are four [n, N] blocks (n = N / replicas anchors against all N images), so its time
and memory grow as N^2 while the encoder's grow as N. This part measures on one device, for
global batches N (default 256 ... 4096):

- the loss alone, forward + backward, on random projections of width ``--proj_out_dim``
  (the very ``losses.nt_xent`` of training): time per call and the allocator's peak memory
  above what was in use before the call;
- the whole pretraining step (``step_variants.measure_step``) of the configured encoder, for the
  batches up to ``step_max_batch``: time per step, peak memory, and the loss's share of the
  step's time.

With R replicas each holds n = N / R anchors: its loss costs 1/R of the one-device figure at
the same N (the gathered N x d projections are small next to the [n, N] blocks).
"""

import dataclasses
import statistics
from typing import Callable, Dict, List

import tensorflow as tf

from simclr_tf.bench import step_variants
from simclr_tf.training import losses

BATCHES = (256, 512, 1024, 2048, 4096)


def _device() -> str:
    return "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"


def peak_mib(fn: Callable[[], object]) -> float:
    """The allocator's peak during one call of ``fn``, above what was in use before, MiB."""
    device = _device()
    try:
        tf.config.experimental.reset_memory_stats(device)
    except ValueError:
        raise ValueError(f"this TensorFlow keeps no allocator statistics for {device}, so no "
                         "peak memory can be measured (on a CPU they come with the oneDNN "
                         "kernels: unset TF_ENABLE_ONEDNN_OPTS or set it to 1).") from None
    before = tf.config.experimental.get_memory_info(device)["current"]
    fn()
    return (tf.config.experimental.get_memory_info(device)["peak"] - before) / 2 ** 20


def spread(times: List[float], prefix: str) -> Dict[str, float]:
    """min, median and max of ``times`` (seconds) as ``{prefix}_ms``, ``..._min_ms``, ..."""
    return {f"{prefix}_ms": 1e3 * statistics.median(times),
            f"{prefix}_min_ms": 1e3 * min(times), f"{prefix}_max_ms": 1e3 * max(times)}


def measure_loss(batch: int, dim: int, temperature: float, runs: int) -> Dict[str, float]:
    """NT-Xent forward + backward on ``batch`` pairs of ``dim``-wide projections."""
    z1 = tf.random.stateless_normal([batch, dim], seed=[1, batch])
    z2 = tf.random.stateless_normal([batch, dim], seed=[2, batch])

    @tf.function
    def loss_and_grads(a, b):
        with tf.GradientTape() as tape:
            tape.watch([a, b])
            loss = losses.nt_xent(a, b, temperature)[0]
        return [loss] + tape.gradient(loss, [a, b])

    call = lambda: [t.numpy() for t in loss_and_grads(z1, z2)]  # noqa: E731
    result = spread(step_variants.call_times(call, 1, runs), f"loss_{batch}")  # 1: trace, warm up
    result[f"loss_{batch}_peak_mib"] = peak_mib(call)
    return result


def run(cfg, strategy, options, report: Callable[[str], None],
        measure_step: Callable) -> Dict[str, float]:
    """The figures of the module doc, keyed ``loss_N_*`` and ``step_N_*``."""
    result: Dict[str, float] = {}
    for batch in options.scaling_batches:
        report(f"measuring NT-Xent alone at global batch {batch} ...")
        result.update(measure_loss(batch, cfg.proj_out_dim, cfg.temperature,
                                   options.timed_runs))
        if batch > options.step_max_batch:
            continue
        report(f"measuring the step at global batch {batch} ...")
        step_cfg = dataclasses.replace(cfg, train_batch_size=batch)
        one = dataclasses.replace(options, steps_per_run=1)
        figures = {}
        result[f"step_{batch}_peak_mib"] = peak_mib(
            lambda: figures.update(measure_step(step_cfg, strategy, one)))
        result[f"step_{batch}_ms"] = 1e3 * figures["train_step_seconds"]
        result[f"loss_share_{batch}"] = result[f"loss_{batch}_ms"] / result[f"step_{batch}_ms"]
    return result


def format_rows(result: Dict[str, float]) -> List[str]:
    """Table lines for the figures ``run`` returned (none when it did not run)."""
    batches = sorted(int(k.split("_")[1]) for k in result
                     if k.startswith("loss_") and k.endswith("_peak_mib"))
    if not batches:
        return []
    lines = ["NT-Xent (forward + backward) and the step against the global batch N:",
             f"  {'N':>6} {'loss ms (min-max)':>22} {'loss MiB':>9} {'step ms':>10} "
             f"{'step MiB':>9} {'loss share':>10}"]
    for n in batches:
        span = f"({result[f'loss_{n}_min_ms']:.1f}-{result[f'loss_{n}_max_ms']:.1f})"
        line = (f"  {n:>6} {result[f'loss_{n}_ms']:>9.1f} {span:>12} "
                f"{result[f'loss_{n}_peak_mib']:>9.1f}")
        if f"step_{n}_ms" in result:
            line += (f" {result[f'step_{n}_ms']:>10.1f} {result[f'step_{n}_peak_mib']:>9.1f} "
                     f"{result[f'loss_share_{n}']:>10.3f}")
        lines.append(line)
    return lines
