"""Where the pretraining step's time goes on this machine, by TF op type (TF's profiler).

Not part of the package; run from the repository:

    .venv/bin/python benchmarks/profile_step.py --width=0.25 --size=28 --batch=256
    .venv/bin/python benchmarks/profile_step.py --width=0.25 --size=28 --batch=256 --isa=avx2

It builds simclr-bench's step (``step_variants.prepare_step``: the training program's step on a
fixed batch of random views, ResNet-18 with the CIFAR stem for 32 px and below), runs it with
one inter-op thread so that ops run one after another and their times add up to the step,
profiles ``--steps`` steps after warm-up and prints per op type the milliseconds per step and
the share, grouped into convolutions (TF's and the matmul path's gathers and matmuls), batch
norm, element-wise work (ReLU, additions, ...) and the rest (loss, optimizer, blur, probe).
"""

import argparse
import collections
import glob
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ISA_ENV = {"avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2",
                    "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}
GROUPS = (  # (group, substrings of op types), the first that matches
    ("convolution", ("Conv2D", "Conv", "GatherV2", "MatMul", "ScatterNd", "Pad")),
    ("batch norm", ("BatchNorm", "Moments", "Mean", "Variance", "Rsqrt")),
    ("element-wise", ("Relu", "Add", "Mul", "Sub", "Square", "Cast", "Identity")),
)


def _group(op_type: str) -> str:
    for name, keys in GROUPS:
        if any(key in op_type for key in keys):
            return name
    return "other"


def op_times(logdir: str) -> collections.Counter:
    """Picoseconds per TF op type in the profile under ``logdir`` (host threads' op events)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: PLC0415

    space = xplane_pb2.XSpace()
    path, = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    totals = collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name  # "op name:op type"
                if ":" in name and "::" not in name and " " not in name:
                    totals[name.rsplit(":", 1)[1]] += event.duration_ps
    return totals


def profile(width: float, size: int, batch: int, steps: int) -> None:
    import tensorflow as tf  # noqa: PLC0415

    tf.config.threading.set_inter_op_parallelism_threads(1)
    sys.path.insert(0, ROOT)
    from simclr_tf.bench import step_variants
    from simclr_tf.runs import strategies  # noqa: PLC0415
    from simclr_tf.core import config as config_lib  # noqa: PLC0415

    cfg = config_lib.Config(train_mode="pretrain", resnet_depth=18, width_multiplier=width,
                            image_size=size, train_batch_size=batch, num_proj_layers=3,
                            temperature=0.5, model_dir="<unused>").validate()
    step = step_variants.prepare_step(cfg, strategies.from_config(cfg), 1)
    for _ in range(3):
        step.call()
    logdir = tempfile.mkdtemp(prefix="profile_step.")
    start = time.perf_counter()
    tf.profiler.experimental.start(logdir)
    for _ in range(steps):
        step.call()
    tf.profiler.experimental.stop()
    wall = (time.perf_counter() - start) / steps * 1e3
    report(op_times(logdir), steps, wall, step.flops)


def report(totals: collections.Counter, steps: int, wall_ms: float, flops: float) -> None:
    ms = {op: ps / 1e9 / steps for op, ps in totals.items()}
    total = sum(ms.values())
    print(f"step: {wall_ms:.1f} ms wall (with the profiler), ops add up to {total:.1f} ms; "
          f"{flops / 1e9:.1f} GFLOP a step")
    groups = collections.Counter()
    for op, value in ms.items():
        groups[_group(op)] += value
    for name, value in groups.most_common():
        print(f"  {name:<14} {value:8.1f} ms  {value / total:6.1%}")
    print("op types (ms per step, share):")
    for op, value in sorted(ms.items(), key=lambda kv: -kv[1])[:25]:
        print(f"  {op:<40} {value:8.2f}  {value / total:6.1%}  [{_group(op)}]")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--isa", choices=["", "avx2"], default="",
                        help="avx2: oneDNN and MKL kept to AVX2 (set before TF loads)")
    args = parser.parse_args()
    caps = ISA_ENV.get(args.isa, {})
    if any(os.environ.get(k) != v for k, v in caps.items()):
        os.execve(sys.executable, [sys.executable] + sys.argv, {**os.environ, **caps})
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    profile(args.width, args.size, args.batch, args.steps)


if __name__ == "__main__":
    main()
