"""Our pretraining step against lightly's (PyTorch), in one run on one machine.

Not part of the package: lightly runs in its own virtual environment, e.g.

    python3.11 -m venv /tmp/peer
    /tmp/peer/bin/pip install torch torchvision lightly==1.6.0
    .venv/bin/python benchmarks/peer_lightly.py --peer_python=/tmp/peer/bin/python

Both steps are timed on random views already in memory: a ResNet-18 with the CIFAR stem
(3x3 stride-1 stem, no max-pool; lightly's ``ResNetGenerator('resnet-18', width)``), a 3-layer
projection head with batch norm to 128, NT-Xent (temperature 0.5) over the 2N views of the
batch taken as one batch (batch norm over both views, as ours), LARS (lightly's
``lightly.utils.lars.LARS``; ours from Model Garden), 2 threads each. Ours also blurs half the
views on the device and trains the linear probe, a few % of its step. The configurations run
interleaved, ``--repeats`` times; the table gives median views/s with min-max and the ratio.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CONFIGS = (  # (width, image size, batch)
    (1.0, 32, 64),
    (0.25, 28, 256),
)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def peer_step(width: float, size: int, batch: int, steps: int) -> float:
    """Views/s of lightly's SimCLR step (run under the peer's Python)."""
    import torch  # noqa: PLC0415
    from lightly.loss import NTXentLoss  # noqa: PLC0415
    from lightly.models import ResNetGenerator  # noqa: PLC0415
    from lightly.models.modules import SimCLRProjectionHead  # noqa: PLC0415
    from lightly.utils.lars import LARS  # noqa: PLC0415

    torch.set_num_threads(2)
    torch.manual_seed(0)
    resnet = ResNetGenerator("resnet-18", width=width)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.resnet = resnet
            features = resnet.linear.in_features
            self.head = SimCLRProjectionHead(features, features, 128, num_layers=3)

        def forward(self, x):
            r = self.resnet
            x = torch.relu(r.bn1(r.conv1(x)))
            x = r.layer4(r.layer3(r.layer2(r.layer1(x))))
            return self.head(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))

    model = Model()
    loss_fn = NTXentLoss(temperature=0.5)
    optimizer = LARS(model.parameters(), lr=0.3, momentum=0.9, weight_decay=1e-6)
    views = torch.rand(2 * batch, 3, size, size)

    def step():
        z = model(views)
        loss = loss_fn(z[:batch], z[batch:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(loss)

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return 2 * batch * steps / (time.perf_counter() - start)


# --isa=avx2: both frameworks' oneDNN, MKL and PyTorch's own kernels kept to AVX2, to see on
# an AVX-512 machine what an AVX2-only CPU (where the issue measured the gap) favours.
ISA_ENV = {"avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2",
                    "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}


def _env(isa: str) -> dict:
    return {**os.environ, **ISA_ENV.get(isa, {})}


def our_step(width: float, size: int, batch: int, timed_runs: int, isa: str = "") -> float:
    """Views/s of simclr-bench's step (the training program's step) in a fresh process."""
    cmd = [sys.executable, "-m", "simclr_tf.cli.bench", "--json", "--parts=step",
           "--resnet_depth=18", f"--width_multiplier={width:g}", f"--image_size={size}",
           f"--train_batch_size={batch}", "--num_proj_layers=3", "--temperature=0.5",
           f"--timed_runs={timed_runs}", "--matmul_calls=3"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True,
                         env=_env(isa)).stdout
    return json.loads(out.strip().splitlines()[-1])["train_views_per_sec"]


def run_peer(python: str, width: float, size: int, batch: int, steps: int,
             isa: str = "") -> float:
    cmd = [python, os.path.abspath(__file__), "--peer_mode", f"--width={width}",
           f"--size={size}", f"--batch={batch}", f"--steps={steps}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env=_env(isa)).stdout
    return json.loads(out.strip().splitlines()[-1])["views_per_sec"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer_python", help="the Python of the venv holding lightly")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed steps of lightly's")
    parser.add_argument("--timed_runs", type=int, default=3, help="of simclr-bench's step")
    parser.add_argument("--isa", choices=["", "avx2"], default="",
                        help="avx2: cap both frameworks' kernels to AVX2")
    parser.add_argument("--peer_mode", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--width", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=64, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer_mode:
        print(json.dumps({"views_per_sec": peer_step(args.width, args.size, args.batch,
                                                     args.steps)}))
        return
    if not args.peer_python:
        parser.error("--peer_python is required: the Python of a venv with lightly.")
    speeds = {}
    for repeat in range(args.repeats):
        for config in CONFIGS:
            for who in ("simclr_tf", "lightly"):
                print(f"{who} {config} ({repeat + 1}/{args.repeats}) ...", flush=True)
                speed = (our_step(*config, args.timed_runs, args.isa) if who == "simclr_tf"
                         else run_peer(args.peer_python, *config, args.steps, args.isa))
                speeds.setdefault((config, who), []).append(speed)
    print("| step only (random views) | simclr_tf views/s | lightly views/s | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for width, size, batch in CONFIGS:
        ours, theirs = (speeds[((width, size, batch), w)] for w in ("simclr_tf", "lightly"))
        ratios = [a / b for a, b in zip(ours, theirs)]
        print(f"| width {width:g}, {size} px, batch {batch} | {statistics.median(ours):.1f} "
              f"({min(ours):.1f}-{max(ours):.1f}) | {statistics.median(theirs):.1f} "
              f"({min(theirs):.1f}-{max(theirs):.1f}) | {statistics.median(ratios):.2f} "
              f"({min(ratios):.2f}-{max(ratios):.2f}) |")
    print(json.dumps({f"{w}_{s}_{b}_{who}": v for ((w, s, b), who), v in speeds.items()}))


if __name__ == "__main__":
    main()
