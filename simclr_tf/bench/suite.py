"""The benchmark behind ``simclr-bench``: step, matmul peak, input pipeline and evaluation.

Everything is measured in one run on one machine, so the figures compare as ratios:

- the pretraining step (blur, forward, NT-Xent, backward, optimizer update: the very
  ``step.make_replica_step`` of ``simclr-pretrain``) in views per second, median of timed
  runs after warm-up, on a fixed batch already on the device;
- its GFLOP/s, with step FLOPs = 3 x the forward FLOPs of encoder + heads counted by TF's
  profiler (2 per multiply-add) x the views per step, and the GFLOP/s of a 2048^3 float32
  matmul in a ``tf.function`` without XLA (median of >= 10 calls after warm-up, measured right
  before and right after the step and averaged); their ratio is the utilisation;
- the input pipeline alone (``pipeline.build_dataset`` in pretraining mode: two augmented views
  and batching, from decoded uint8 source images held in memory) in views per second, its
  ratio to what the step consumes, and (with ``jit_augment``) its speed-up over the same
  pipeline on TF's colour kernels, the original's;
- evaluation: the eval pipeline (centre crop) feeding inference, in images per second.
"""

import dataclasses
import os
import statistics
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import tensorflow as tf

from simclr_tf.bench import step_variants
from simclr_tf.core import config as config_lib
from simclr_tf.data import pipeline as data_lib
from simclr_tf.data import sources
from simclr_tf.models import simclr_model as model_lib

MATMUL_SIZE = 2048
PARTS = ("step", "input", "eval")
# Only when asked: whole programs in subprocesses, or long sweeps (bench_scaling).
SLOW_PARTS = ("memory", "startup", "loss_scaling", "input_files", "chunks")
NUM_CLASSES = 10


@dataclasses.dataclass
class Options:
    """How long and what to measure."""

    warmup_runs: int = 1
    timed_runs: int = 10  # x steps_per_run: 20 timed steps
    steps_per_run: int = 2
    matmul_calls: int = 10
    input_seconds: float = 8.0
    eval_seconds: float = 8.0
    source_height: int = 256
    source_width: int = 320
    source_images: int = 256
    parts: tuple = PARTS
    variants: tuple = ()
    scaling_batches: tuple = (256, 512, 1024, 2048, 4096)  # loss_scaling
    step_max_batch: int = 4096  # loss_scaling: the step only up to this global batch
    chunk_counts: tuple = (1, 2, 4, 8)  # chunks: the --embedding_chunks measured
    file_images: int = 64  # input_files: JPEGs written, their size, seconds and repeats
    file_height: int = 375
    file_width: int = 500
    file_seconds: float = 4.0
    file_repeats: int = 3


def _median_time(fn: Callable[[], object], warmup: int, runs: int) -> float:
    return statistics.median(step_variants.call_times(fn, warmup, runs))


def matmul_gflops(calls: int = 10, size: int = MATMUL_SIZE) -> float:
    """GFLOP/s of a ``size``^3 float32 matmul in a tf.function (no XLA), median of ``calls``."""
    a = tf.random.stateless_uniform([size, size], seed=[1, 2])
    b = tf.random.stateless_uniform([size, size], seed=[3, 4])
    matmul = tf.function(tf.matmul, jit_compile=False)
    seconds = _median_time(lambda: matmul(a, b).numpy(), warmup=2, runs=max(10, calls))
    return 2.0 * size ** 3 / seconds / 1e9


def _source(options: Options) -> sources.ArraySource:
    rng = np.random.default_rng(0)
    shape = [options.source_images, options.source_height, options.source_width, 3]
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, options.source_images).astype(np.int32)
    return sources.ArraySource({"train": (images, labels)}, NUM_CLASSES, "bench")


def _iterate_for(ds: tf.data.Dataset, seconds: float, per_batch: Callable[[object], int]
                 ) -> float:
    """Items per second over ``seconds`` after a warm-up, pulling batches from ``ds``."""
    iterator = iter(ds)
    warm_until = time.perf_counter() + min(3.0, seconds / 2)
    while time.perf_counter() < warm_until:
        per_batch(next(iterator))
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        count += per_batch(next(iterator))
    return count / (time.perf_counter() - start)


def measure_input(cfg: config_lib.Config, options: Options) -> float:
    """Views/s of the pretraining input pipeline (two views per image) alone."""
    ds = data_lib.build_dataset(
        _source(options), "train", "pretrain", cfg.train_batch_size, cfg.image_size,
        color_jitter_strength=cfg.color_jitter_strength,
        color_jitter_impl=cfg.color_jitter_impl, cache=cfg.cache_dataset, seed=cfg.seed,
        jit_augment=cfg.jit_augment)
    return _iterate_for(ds, options.input_seconds, lambda b: 2 * int(b[0].shape[0]))


def measure_eval(cfg: config_lib.Config, options: Options) -> float:
    """Images/s of evaluation: centre-crop pipeline feeding the model in inference mode."""
    with tf.distribute.get_strategy().scope():
        model = model_lib.from_config(dataclasses.replace(cfg, train_mode="finetune",
                                                          global_bn=False), NUM_CLASSES)
    ds = data_lib.build_dataset(_source(options), "train", "eval", cfg.eval_batch_size,
                                cfg.image_size).repeat()
    infer = tf.function(lambda x: model(x, training=False)["logits_sup"])

    def per_batch(batch):
        infer(batch[0]).numpy()
        return int(batch[0].shape[0])

    return _iterate_for(ds, options.eval_seconds, per_batch)


def _measure_steps(cfg: config_lib.Config, strategy, options: Options,
                   report: Callable[[str], None]) -> Dict[str, float]:
    """The step and its variants (interleaved), between two measures of the matmul peak."""
    report("measuring the float32 matmul peak ...")
    before = matmul_gflops(options.matmul_calls)
    result = step_variants.measure_with_variants(cfg, strategy, options, report)
    after = matmul_gflops(options.matmul_calls)
    result["matmul_gflops"] = (before + after) / 2
    result["matmul_gflops_before"], result["matmul_gflops_after"] = before, after
    result["utilisation"] = result["train_gflops"] / result["matmul_gflops"]
    for name in options.variants:
        result[f"variant_{name}_utilisation"] = (result[f"variant_{name}_gflops"]
                                                 / result["matmul_gflops"])
    return result


def run(cfg: config_lib.Config, options: Optional[Options] = None,
        report: Callable[[str], None] = print) -> Dict[str, float]:
    """Measures what ``options.parts`` names and returns the figures (see the module doc)."""
    options = options or Options()
    unknown = set(options.parts) - set(PARTS) - set(SLOW_PARTS)
    if unknown:
        raise ValueError(f"unknown benchmark parts {sorted(unknown)}; use some of "
                         f"{PARTS + SLOW_PARTS}.")
    unknown = set(options.variants) - set(step_variants.VARIANTS)
    if unknown:
        raise ValueError(f"unknown step variants {sorted(unknown)}; use some of "
                         f"{list(step_variants.VARIANTS)}.")
    cfg = dataclasses.replace(cfg, model_dir=cfg.model_dir or "<unused>",
                              train_mode="pretrain").validate()
    from simclr_tf.runs import strategies  # noqa: PLC0415

    strategy = strategies.from_config(cfg)
    data_lib.check_batch_divides(cfg.train_batch_size, strategy.num_replicas_in_sync,
                                 "train_batch_size")
    result: Dict[str, float] = {}
    if "step" in options.parts:
        result.update(_measure_steps(cfg, strategy, options, report))
    if "input" in options.parts:
        report(f"measuring the input pipeline at {cfg.image_size} px from "
               f"{options.source_height}x{options.source_width} sources ...")
        result["input_views_per_sec"] = measure_input(cfg, options)
        if cfg.jit_augment:  # the same pipeline on TF's kernels: the original's
            report("measuring the input pipeline on TF's colour kernels (--nojit_augment) ...")
            reference = measure_input(dataclasses.replace(cfg, jit_augment=False), options)
            result["input_tf_kernels_views_per_sec"] = reference
            result["input_speedup_over_tf_kernels"] = result["input_views_per_sec"] / reference
        if "train_views_per_sec" in result:
            result["input_to_train_ratio"] = (result["input_views_per_sec"]
                                              / result["train_views_per_sec"])
    if "eval" in options.parts:
        report("measuring evaluation ...")
        result["eval_views_per_sec"] = measure_eval(cfg, options)
    if "memory" in options.parts:
        report("measuring resident memory over 2,000 smoke steps ...")
        result.update(measure_memory_growth())
    if "startup" in options.parts:
        report("measuring start-up on a folder of 100,000 images ...")
        result.update(measure_folder_startup())
    if "input_files" in options.parts:
        from simclr_tf.bench import input_files as bench_files  # noqa: PLC0415

        result.update(bench_files.run(cfg, options, report))
    if "loss_scaling" in options.parts:
        from simclr_tf.bench import loss_scaling as bench_scaling  # noqa: PLC0415

        result.update(bench_scaling.run(cfg, strategy, options, report,
                                        step_variants.measure_step))
    if "chunks" in options.parts:
        from simclr_tf.bench import chunks as bench_chunks  # noqa: PLC0415

        result.update(bench_chunks.run(cfg, strategy, options, report,
                                       step_variants.measure_step))
    return result


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _program(args: List[str], on_line: Callable[[str, float, int], bool]) -> int:
    """Runs simclr-pretrain with ``args``; ``on_line(line, seconds, pid)`` for each output
    line (True stops the program). Returns its exit code."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "simclr_tf.cli.pretrain", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    for line in proc.stdout:
        if on_line(line, time.perf_counter() - start, proc.pid):
            proc.kill()
            break
    return proc.wait()


def measure_memory_growth(first: int = 200, last: int = 2000) -> Dict[str, float]:
    """Resident memory of a smoke pretraining run after ``first`` and after ``last`` steps."""
    import tempfile  # noqa: PLC0415

    rss = {}
    with tempfile.TemporaryDirectory() as model_dir:
        args = ["--flagfile=flags/smoke.flags", f"--model_dir={model_dir}",
                f"--train_steps={last}", "--steps_per_loop=100", "--checkpoint_steps=500",
                "--keep_hub_module_max=0"]

        def on_line(line, _, pid):
            for step in (first, last):
                if line.startswith(f"step {step}/"):
                    rss[step] = _rss_mib(pid)
            return False

        _program(args, on_line)
    return {f"rss_mib_step_{first}": rss.get(first, float("nan")),
            f"rss_mib_step_{last}": rss.get(last, float("nan")),
            "rss_growth": rss.get(last, float("nan")) / rss.get(first, float("nan")) - 1}


def measure_folder_startup(num_files: int = 100_000, classes: int = 100) -> Dict[str, float]:
    """Seconds from starting simclr-pretrain on a folder of ``num_files`` small PNGs to its
    first training step (the program's own start-up, TF import included), and to its first
    line (TF import and flag parsing only)."""
    import io  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    from PIL import Image  # noqa: PLC0415 (a test dependency, as is this measurement)

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8) + 90).save(buffer, format="PNG")
    payload = buffer.getvalue()
    times = {}
    with tempfile.TemporaryDirectory() as root:
        for c in range(classes):
            folder = os.path.join(root, "data", f"class_{c:03d}")
            os.makedirs(folder)
            for i in range(num_files // classes):
                with open(os.path.join(folder, f"{i:06d}.png"), "wb") as f:
                    f.write(payload)

        def on_line(line, seconds, _):
            if line.startswith("step 1/"):
                times["first_step"] = seconds
                return True
            return False

        _program(["--flagfile=flags/smoke.flags", "--dataset=folder",
                  f"--data_dir={os.path.join(root, 'data')}", f"--model_dir={root}/run",
                  "--steps_per_loop=1", "--train_steps=2", "--checkpoint_steps=2",
                  "--lineareval_while_pretraining=false", "--keep_hub_module_max=0"], on_line)
    return {"folder_files": num_files,
            "folder_startup_seconds": times.get("first_step", float("nan"))}


ROWS: List[tuple] = [
    ("train_views_per_sec", "pretraining step", "views/s"),
    ("train_step_seconds", "  seconds per step", "s"),
    ("train_gflops", "  achieved", "GFLOP/s"),
    ("matmul_gflops", "float32 matmul 2048^3 (mean of before/after)", "GFLOP/s"),
    ("utilisation", "utilisation (step / matmul)", ""),
    ("input_views_per_sec", "input pipeline (2 views, batched)", "views/s"),
    ("input_to_train_ratio", "  input / step consumption", "x"),
    ("input_tf_kernels_views_per_sec", "  on TF's colour kernels (--nojit_augment)", "views/s"),
    ("input_speedup_over_tf_kernels", "  speed-up of the XLA colour ops", "x"),
    ("eval_views_per_sec", "evaluation (pipeline + inference)", "images/s"),
]


def format_table(cfg: config_lib.Config, result: Dict[str, float]) -> str:
    """A readable table of ``result``."""
    head = (f"simclr-bench: ResNet-{cfg.resnet_depth} x{cfg.width_multiplier:g}"
            f"{f' sk {cfg.sk_ratio:g}' if cfg.sk_ratio else ''}, {cfg.image_size} px, batch "
            f"{cfg.train_batch_size}, {cfg.precision}{', XLA' if cfg.jit_compile else ''}, "
            f"global_bn={cfg.global_bn}, blur={cfg.use_blur}")
    lines = [head, "-" * len(head)]
    for key, label, unit in ROWS:
        if key in result:
            span = (f" ({result[key + '_min']:.2f}-{result[key + '_max']:.2f})"
                    if key + "_min" in result else "")
            lines.append(f"{label:<46} {result[key]:>10.2f} {unit}{span}")
    variants = [k[len("variant_"):-len("_views_per_sec")] for k in result
                if k.startswith("variant_") and k.endswith("_views_per_sec")]
    if variants:
        lines.append("step variants (views/s, ratio to the default step, utilisation):")
    for name in variants:
        speed, key = result[f"variant_{name}_views_per_sec"], f"variant_{name}_ratio"
        ratio = result.get(key, speed / result["train_views_per_sec"])
        span = (f" ({result[key + '_min']:.2f}-{result[key + '_max']:.2f})"
                if key + "_min" in result else "")
        lines.append(f"  {name:<44} {speed:>10.2f} {ratio:.2f}x{span} "
                     f"{result.get(f'variant_{name}_utilisation', float('nan')):.3f}")
    from simclr_tf.bench import chunks as bench_chunks  # noqa: PLC0415
    from simclr_tf.bench import input_files as bench_files  # noqa: PLC0415
    from simclr_tf.bench import loss_scaling as bench_scaling  # noqa: PLC0415

    return "\n".join(lines + bench_files.format_rows(result)
                     + bench_scaling.format_rows(result) + bench_chunks.format_rows(result))

