"""The benchmark's pretraining step: the default and its variants, interleaved in one run.

Every step (the default config's and each variant's) is built and warmed up first; then the
timed calls go round the steps in turn, so each sees the same stretch of the machine's time.
Each step gives its median views/s with the min and max over its timed calls, and each
variant its ratio to the default, the median (min, max) of the ratios of the calls taken
side by side in each round.
"""

import dataclasses
import statistics
import time
from typing import Callable, Dict, List, Optional

import tensorflow as tf

from simclr_tf.core import config as config_lib
from simclr_tf.models import simclr_model as model_lib
from simclr_tf.models.kernels import convs
from simclr_tf.training import optim
from simclr_tf.training import step as step_lib

# Step variants that ``--variants`` measures in one run: changes to the config, and for the
# steps before the fused single-replica batch norm, ``sync_bn`` forcing synchronised layers.
VARIANTS = {
    "default": {},
    "sync_bn_stock_convs": {"matmul_small_convs": False},  # sync BN, TF's convolutions
    "sync_bn_one_replica": {},  # synchronised batch norm on one replica
    "no_blur": {"use_blur": False},
    "momentum": {"optimizer": "momentum"},  # instead of LARS: the cost of its norms
    "xla": {"jit_compile": True},
    "stock_convs": {"matmul_small_convs": False},  # TF's kernels for the small convolutions
    "fixed_kernels": {"calibrate_kernels": False},  # the matmul at fixed sizes, not measured
    "mixed_bfloat16": {"precision": "mixed_bfloat16"},
}
NUM_CLASSES = 10


@dataclasses.dataclass
class PreparedStep:
    """A built step: ``call()`` runs ``steps`` steps of ``views`` views, ``flops`` each."""

    call: Callable[[], object]
    steps: int
    views: int
    flops: float


def forward_flops(model, image_size: int) -> int:
    """FLOPs of one image's forward pass through ``model``, counted by TF's profiler (on TF's
    convolutions: the same FLOPs, and nothing for the convolution chooser to measure)."""
    from tensorflow.python.framework import convert_to_constants  # noqa: PLC0415

    fn = tf.function(lambda x: model(x, training=False))
    with convs.tf_kernels(model):
        concrete = fn.get_concrete_function(tf.TensorSpec([1, image_size, image_size, 3]))
    graph = convert_to_constants.convert_variables_to_constants_v2(concrete).graph
    builder = tf.compat.v1.profiler.ProfileOptionBuilder
    options = builder(builder.float_operation()).with_empty_output().build()
    return int(tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops)


def prepare_step(cfg: config_lib.Config, strategy, steps: int,
                 sync_bn: Optional[bool] = None) -> PreparedStep:
    """The pretraining step of ``cfg`` on a fixed random batch, ``steps`` per call in one
    tf.function as orbit's loop runs them (``sync_bn``: force the batch norm's kind; None
    decides as training does). Not yet traced."""
    num_classes = NUM_CLASSES if cfg.lineareval_while_pretraining else None
    with strategy.scope():
        model = model_lib.from_config(cfg, num_classes, strategy, sync_bn=sync_bn)
        optimizer = optim.make_optimizer(cfg, cfg.learning_rate)
    replica_step = step_lib.make_replica_step(model, optimizer, cfg,
                                              strategy.num_replicas_in_sync)
    batch, size = cfg.train_batch_size, cfg.image_size
    images = tf.random.stateless_uniform([batch, size, size, 6], seed=[5, 6])
    labels = tf.random.stateless_uniform([batch], seed=[7, 8], maxval=NUM_CLASSES,
                                         dtype=tf.int32)
    inputs = step_lib.split_batch(strategy, (images, labels))

    @tf.function
    def run_steps(x):
        loss = tf.constant(0.0)
        for _ in tf.range(steps):
            loss, _ = step_lib.run_step(strategy, replica_step, x)
        return loss

    return PreparedStep(lambda: run_steps(inputs).numpy(), steps, 2 * batch,
                        3 * forward_flops(model, size) * 2 * batch)


def figures(step: PreparedStep, times: List[float]) -> Dict[str, float]:
    """The step's figures from the seconds of its timed calls."""
    per_step = [t / step.steps for t in times]
    seconds = statistics.median(per_step)
    return {"train_views_per_sec": step.views / seconds, "train_step_seconds": seconds,
            "train_views_per_sec_min": step.views / max(per_step),
            "train_views_per_sec_max": step.views / min(per_step),
            "train_gflops": step.flops / seconds / 1e9, "step_gflop": step.flops / 1e9}


def call_times(fn: Callable[[], object], warmup: int, runs: int) -> List[float]:
    """Seconds of each of ``runs`` calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def interleaved_times(steps: Dict[str, PreparedStep], warmup: int, rounds: int
                      ) -> Dict[str, List[float]]:
    """Seconds of each step's calls: ``warmup`` calls each, then ``rounds`` rounds of one
    timed call of every step in turn."""
    for step in steps.values():
        for _ in range(warmup):
            step.call()
    times: Dict[str, List[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step.call()
            times[name].append(time.perf_counter() - start)
    return times


def measure_step(cfg: config_lib.Config, strategy, options,
                 sync_bn: Optional[bool] = None) -> Dict[str, float]:
    """Views/s and achieved GFLOP/s of the pretraining step of ``cfg`` alone."""
    step = prepare_step(cfg, strategy, options.steps_per_run, sync_bn)
    times = interleaved_times({"step": step}, options.warmup_runs, options.timed_runs)
    return figures(step, times["step"])


def measure_with_variants(cfg: config_lib.Config, strategy, options,
                          report: Callable[[str], None]) -> Dict[str, float]:
    """The default step and ``options.variants``, interleaved (module doc)."""
    steps = {"": prepare_step(cfg, strategy, options.steps_per_run)}
    for name in options.variants:
        steps[name] = prepare_step(dataclasses.replace(cfg, **VARIANTS[name]), strategy,
                                   options.steps_per_run,
                                   sync_bn=True if name.startswith("sync_bn_") else None)
    report(f"measuring the pretraining step ({cfg.train_batch_size} images, "
           f"{2 * cfg.train_batch_size} views)"
           + (f" and {len(options.variants)} variant(s), interleaved" if options.variants
              else "") + " ...")
    times = interleaved_times(steps, options.warmup_runs, options.timed_runs)
    result = figures(steps[""], times[""])
    for name in options.variants:
        step = figures(steps[name], times[name])
        ratios = [d / v for d, v in zip(times[""], times[name])]
        for key in ("views_per_sec", "views_per_sec_min", "views_per_sec_max", "gflops"):
            result[f"variant_{name}_{key}"] = step[f"train_{key}"]
        result[f"variant_{name}_ratio"] = statistics.median(ratios)
        result[f"variant_{name}_ratio_min"] = min(ratios)
        result[f"variant_{name}_ratio_max"] = max(ratios)
    return result
