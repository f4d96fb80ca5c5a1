"""The programs as a newcomer runs them on an ImageNet-style folder, offline: pretrain with
default splits, fine-tune on a label subset, then read the runs with simclr-eval and
simclr-export given a flagfile or only --model_dir; the original's modes and commands."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl import flags
from original_commands import README_CIFAR10, argv_of
from PIL import Image

import simclr_tf  # noqa: F401
from simclr_tf.cli import _common
from simclr_tf.cli import flags as cli_flags
from simclr_tf.core.config import Config
from simclr_tf.evaluation import supervised
from simclr_tf.training import train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = ["--flagfile=flags/smoke.flags", "--train_steps=2", "--eval_steps=0",
         "--eval_batch_size=4", "--keep_hub_module_max=0"]


NO_NETWORK = r"""
import os, runpy, socket, sys
def refuse(*args, **kwargs):  # recorded even if the caller swallows the error
    with open(os.environ["NETWORK_ATTEMPTS"], "a") as f:
        f.write(repr(args)[:200] + "\n")
    raise OSError("network access attempted during a run: " + repr(args)[:200])
socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__")
"""


def _no_network_prefix():
    """``unshare -n`` (an empty network namespace, which C++ code cannot get around either)
    where this machine allows it; the Python-level guard applies in any case."""
    try:
        ok = subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
    except FileNotFoundError:
        ok = False
    return ["unshare", "-n"] if ok else []


PREFIX = _no_network_prefix()


def _program(name, *args, attempts):
    """Runs ``simclr_tf.cli.<name>`` offline: in an empty network namespace where the machine
    allows it, and with Python's sockets refused and every attempt recorded in any case."""
    proc = subprocess.run([*PREFIX, sys.executable, "-c", NO_NETWORK, f"simclr_tf.cli.{name}",
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, NETWORK_ATTEMPTS=str(attempts)))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert not attempts.exists(), attempts.read_text()
    return proc.stdout, proc.stderr


def _imagenet_layout(root):
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 5), ("val", 2)):
        for c in ("cat", "dog"):
            os.makedirs(root / split / c)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (18 + i, 22, 3), np.uint8)).save(
                    root / split / c / f"{c}_{split}_{i}.jpg")
    # Two broken JPEGs, each with its libjpeg complaint at every epoch.
    (root / "train" / "dog" / "dog_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(60))
    (root / "train" / "cat" / "cat_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    return str(root)


def _checkpoint_in(stdout):
    line = [x for x in stdout.splitlines() if x.startswith("eval:")][-1]
    return line.split("checkpoint = ")[1].strip()


def test_programs_on_a_train_val_folder_and_the_programs_that_read_a_run(tmp_path):
    data = _imagenet_layout(tmp_path / "data")
    pre, ft, export = tmp_path / "pre", tmp_path / "ft", tmp_path / "export"
    offline = tmp_path / "network_attempts"
    folder = ["--dataset=folder", f"--data_dir={data}"]
    # default splits
    out, err = _program("pretrain", *SMALL, *folder, f"--model_dir={pre}", attempts=offline)
    assert "step 2/2" in out and "ETA" in out, out
    assert "cuInit" not in err and "Compiled cluster" not in err, err  # no native log noise
    assert json.loads((pre / "summary.json").read_text())["global_step"] == 2
    # The broken files are skipped, counted and named once, and the run says so at the end.
    for name in ("dog_broken.jpg", "cat_broken.jpg"):
        named = [line for line in err.splitlines() if name in line]
        assert len(named) == 1 and "TF could not decode it" in named[0], err
    for complaint in ("Input file read error", "Improper call to JPEG library"):
        assert complaint not in err  # libjpeg's lines at every epoch, filtered
    assert "skipped 2 broken image file(s)" in out
    assert json.loads((pre / "summary.json").read_text())["skipped_files"] == 2
    _program("finetune", *SMALL, *folder, f"--model_dir={ft}", f"--checkpoint={pre}",
             "--train_mode=finetune", "--linear_eval", "--train_examples_per_class=3",
             attempts=offline)
    summary = json.loads((ft / "summary.json").read_text())
    assert summary["train_examples_per_class"] == {"cat": 3, "dog": 3}
    assert summary["train_examples"] == 6
    # A program reading a run uses the run's own newest checkpoint, not the fine-tune's
    # starting point that its flags.txt names in --checkpoint ...
    out, _ = _program("evaluate", f"--flagfile={ft / 'flags.txt'}", attempts=offline)
    assert _checkpoint_in(out) == str(ft / "ckpt-2")
    assert float(out.split("top1 = ")[1].split(",")[0]) == pytest.approx(summary["top1"])
    # ... unless --checkpoint is given on the command line.
    ft_cfg = Config(model_dir=str(ft), checkpoint=str(pre))
    assert _common.run_checkpoint(ft_cfg, {"checkpoint"}) == str(pre)
    assert _common.run_checkpoint(ft_cfg, set()) == str(ft)
    # Given only --model_dir, the run's settings come from its flags.txt.
    out, _ = _program("evaluate", f"--model_dir={pre}", attempts=offline)
    assert f"using the run's settings in {pre / 'flags.txt'}" in out
    assert _checkpoint_in(out) == str(pre / "ckpt-2")
    out, _ = _program("export", f"--model_dir={ft}", f"--export_dir={export}", attempts=offline)
    assert f"exported {ft} to {export}" in out and (export / "saved_model.pb").exists()
    # flags.txt names its program's mode: the wrong program is refused by name.
    proc = subprocess.run([sys.executable, "-m", "simclr_tf.cli.finetune",
                           f"--flagfile={pre / 'flags.txt'}"], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 2 and "use simclr-pretrain" in proc.stderr, proc.stderr[-2000:]


def test_eval_mode_scores_each_checkpoint_up_to_the_last_step(tmp_path):
    cfg = Config(dataset="shapes", image_size=16, resnet_depth=18, width_multiplier=0.25,
                 num_proj_layers=1, proj_out_dim=8, train_batch_size=8, eval_batch_size=50,
                 train_steps=4, checkpoint_steps=2, eval_steps=1, strategy="default",
                 keep_hub_module_max=0, global_bn=False, model_dir=str(tmp_path))
    summary = train.run(cfg)
    result = supervised.evaluate_checkpoints(cfg, timeout=0, min_interval_secs=0)
    assert result["checkpoint"].endswith("ckpt-4")
    assert result["top1"] == pytest.approx(summary["top1"])


def test_the_original_readme_cifar10_command_trains_on_prepared_data(tmp_path):
    fv = flags.FlagValues()
    cli_flags.define_flags(flag_values=fv)
    fv(["simclr-pretrain", *argv_of(README_CIFAR10)])
    cfg = cli_flags.config_from_flags(fv, model_dir=str(tmp_path), train_steps=2,
                                      train_batch_size=16, eval_batch_size=16, eval_steps=1,
                                      keep_hub_module_max=0)
    with tfds.testing.mock_data(num_examples=32):
        summary = train.run(cfg)
    assert summary["global_step"] == 2 and np.isfinite(summary["contrast_loss"])
    assert (cfg.resnet_depth, cfg.width_multiplier, cfg.num_proj_layers) == (18, 1, 3)
