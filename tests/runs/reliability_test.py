"""Crash safety: SIGKILL anywhere, a corrupt newest checkpoint, a failing checkpoint write,
one run per model_dir."""

import dataclasses
import glob
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

import simclr_tf  # noqa: F401
from simclr_tf.runs import export as export_lib
from simclr_tf.runs import run_folder
from simclr_tf.training import train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 10
# A pause (fault_launcher's delays) that lasts until the test kills the run: what the test
# waits for then is a line the run prints, not the machine's speed.
HELD = 24 * 3600
# How long a run may take to reach what a test waits for before the test gives up: a safety
# net only, far longer than any machine needs.
PATIENCE = 600


def _with_fault(fault, cmd):
    """``cmd`` (a ``python -m simclr_tf.cli.PROGRAM ...`` command) with ``fault`` injected
    from outside the library (tests/fault_launcher.py)."""
    assert cmd[1] == "-m"
    return [cmd[0], os.path.join(ROOT, "tests", "fault_launcher.py"), fault, *cmd[2:]]


def _pretrain_cmd(model_dir, *extra):
    return [sys.executable, "-m", "simclr_tf.cli.pretrain", "--flagfile=flags/smoke.flags",
            f"--model_dir={model_dir}", f"--train_steps={STEPS}", "--checkpoint_steps=2",
            "--steps_per_loop=1", "--keep_checkpoint_max=2",
            "--lineareval_while_pretraining=false", "--noknn_monitor", *extra]


def _finetune_cmd(model_dir, checkpoint, *extra):
    return [sys.executable, "-m", "simclr_tf.cli.finetune", "--flagfile=flags/smoke.flags",
            "--train_mode=finetune", f"--checkpoint={checkpoint}", f"--model_dir={model_dir}",
            f"--train_steps={STEPS}", "--checkpoint_steps=2", "--steps_per_loop=1",
            "--keep_checkpoint_max=2", *extra]


class _Run:
    """A training subprocess whose output lines are collected as they come."""

    def __init__(self, cmd, env=None):
        self.lines = []
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {})))
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, text, timeout):
        end = time.time() + timeout
        while time.time() < end and self.proc.poll() is None:
            if any(text in line for line in self.lines):
                return True
            time.sleep(0.02)
        return any(text in line for line in self.lines)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=60)
        self.reader.join(timeout=10)
        return "".join(self.lines)


def _complete_checkpoints(model_dir):
    """The recorded checkpoints, each checked to be readable with a step equal to its number."""
    state = tf.train.get_checkpoint_state(str(model_dir))
    if state is None:
        return []
    prefixes = list(state.all_model_checkpoint_paths)
    assert state.model_checkpoint_path == prefixes[-1]
    for prefix in prefixes:
        prefix = os.path.join(str(model_dir), os.path.basename(prefix))
        reader = tf.train.load_checkpoint(prefix)  # raises on a missing or truncated file
        step = reader.get_tensor("optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE")
        assert int(step) == int(prefix.rsplit("-", 1)[1])
    return prefixes


@pytest.mark.parametrize("program", ["pretrain", "finetune"])
def test_sigkill_at_random_moments_always_resumes_from_a_complete_checkpoint(tmp_path, program):
    model_dir = tmp_path / "run"
    if program == "pretrain":
        command = lambda: _pretrain_cmd(model_dir)  # noqa: E731
    else:  # fine-tuning from a short pretraining run's checkpoint
        pre = tmp_path / "pre"
        subprocess.run(_pretrain_cmd(pre, "--train_steps=2", "--keep_hub_module_max=0"),
                       cwd=ROOT, check=True, capture_output=True, timeout=600)
        command = lambda: _finetune_cmd(model_dir, pre)  # noqa: E731
    rng = random.Random(20261125)
    # Each write of a checkpoint pauses between writing its files and recording it, so a
    # kill at a random moment can land inside the write; on the attempts that kill inside
    # one on purpose, the first write pauses until the kill (SIGKILL ends the pause).
    slow_writes, held_write = "checkpoint-delay=0.5", f"checkpoint-delay={HELD}"
    # Pretraining gets 6 attempts; fine-tuning, whose checkpoints are written by the same
    # code, 3 (its own part is the start from --checkpoint, then the resume).
    attempts = 6 if program == "pretrain" else 3
    kills, inside_write, history = 0, 0, []
    for attempt in range(attempts):
        before = _complete_checkpoints(model_dir)
        resumed = int(before[-1].rsplit("-", 1)[1]) if before else 0
        run = _Run(_with_fault(held_write if attempt % 3 == 1 else slow_writes, command()))
        # Each kill waits for something the run reports, never for a time that depends on
        # the machine's speed (the timeouts are safety nets).
        if attempt % 3 == 1:  # inside a checkpoint write, on its log line
            assert run.wait_for("inside the write of checkpoint", timeout=600), \
                "no checkpoint write began: " + "".join(run.lines)[-3000:]
            assert run.proc.poll() is None  # held inside the write until the kill
            inside_write += 1
        elif attempt % 3 == 2 and resumed < STEPS - 1:  # training: after a step's line
            step = rng.randint(resumed + 1, STEPS - 1)
            assert run.wait_for(f"step {step}/{STEPS} |", timeout=300), "".join(run.lines)
        else:  # during start-up: before the first step (importing TF alone takes longer)
            time.sleep(rng.uniform(0.0, 1.0))
        finished = run.proc.poll() is not None
        out = run.kill()
        history.append(out)
        if finished:
            assert run.proc.returncode == 0, out[-3000:]
            break
        kills += 1
        after = _complete_checkpoints(model_dir)  # every recorded checkpoint is complete
        assert len(after) <= 2  # keep_checkpoint_max counts complete ones
        if before:
            # Nothing older than what we resumed from was lost, and the run resumed from it.
            assert after, out[-3000:]
            if "resumed from" in out:
                assert f"resumed from {before[-1]}" in out, out[-3000:]
            assert int(after[-1].rsplit("-", 1)[1]) >= int(before[-1].rsplit("-", 1)[1])
    assert kills == attempts and inside_write == len(range(1, attempts, 3)), \
        (kills, inside_write)
    print(f"simclr-{program}: {kills} kills, {inside_write} inside a checkpoint write")
    exports = model_dir / "saved_model"
    if program == "pretrain":  # (the export code is the same after fine-tuning)
        # One more, inside the export that ends the run (after its files are written,
        # before it is renamed into place).
        run = _Run(_with_fault(f"export-delay={HELD}", command()))
        assert run.wait_for("inside the write of export", timeout=600), "".join(run.lines)
        run.kill()
        assert not [p for p in exports.iterdir() if not p.name.startswith(".tmp-")]
        assert export_lib.list_exports(str(model_dir)) == []  # the partial one does not count
    final = subprocess.run(command(), cwd=ROOT, capture_output=True, text=True,
                           timeout=600)
    assert final.returncode == 0, final.stdout[-2000:] + final.stderr[-2000:]
    assert [p.name for p in exports.iterdir()] == [str(STEPS)]  # complete, nothing left over
    assert export_lib.list_exports(str(model_dir)) == [str(exports / str(STEPS))]
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["global_step"] == STEPS
    assert _complete_checkpoints(model_dir)[-1].endswith(f"ckpt-{STEPS}")
    assert not glob.glob(str(model_dir / "ckpt-*_temp*"))  # partial writes cleaned up
    assert not (model_dir / run_folder.LOCK_NAME).exists()


def test_corrupt_newest_checkpoint_is_named_and_the_previous_one_used(tiny, tmp_path, capsys):
    cfg = tiny(tmp_path, lineareval_while_pretraining=False)
    train.run(cfg)
    (data,) = glob.glob(str(tmp_path / "ckpt-4.data-*"))
    size = os.path.getsize(data)
    with open(data, "r+b") as f:
        f.truncate(size // 2)
    capsys.readouterr()
    summary = train.run(dataclasses.replace(cfg, train_steps=6))
    out = capsys.readouterr().out
    assert f"checkpoint {tmp_path}/ckpt-4 is unreadable" in out
    assert f"resumed from {tmp_path}/ckpt-2 at step 2" in out
    assert summary["global_step"] == 6
    assert _complete_checkpoints(tmp_path)[-1].endswith("ckpt-6")


def test_failed_checkpoint_write_keeps_the_earlier_ones_and_says_so(tmp_path):
    model_dir = tmp_path / "run"
    proc = subprocess.run(_with_fault("checkpoint-oserror=4", _pretrain_cmd(model_dir)),
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("simclr-pretrain: error: could not write checkpoint") and \
        "ckpt-4" in last and "No space left on device" in last and \
        f"newest complete: {model_dir}/ckpt-2" in last, proc.stderr[-3000:]
    assert [os.path.basename(p) for p in _complete_checkpoints(model_dir)] == ["ckpt-2"]
    again = subprocess.run(_pretrain_cmd(model_dir, "--train_steps=6", "--keep_hub_module_max=0"),
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from {model_dir}/ckpt-2" in again.stdout


def test_a_second_run_on_the_same_model_dir_is_refused(tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / run_folder.LOCK_NAME).write_text(json.dumps(
            {"host": socket.gethostname(), "pid": sleeper.pid, "started": "earlier"}))
        proc = subprocess.run(_pretrain_cmd(tmp_path), cwd=ROOT, capture_output=True,
                              text=True, timeout=600)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("simclr-pretrain: error:") and f"pid {sleeper.pid}" in last and \
        socket.gethostname() in last and "in use by another run" in last, proc.stderr
    assert not (tmp_path / "flags.txt").exists()  # the refused run wrote nothing
    with pytest.raises(ValueError, match="pid 7 on host elsewhere"):
        (tmp_path / run_folder.LOCK_NAME).write_text(json.dumps({"host": "elsewhere", "pid": 7}))
        run_folder.RunLock(str(tmp_path)).acquire()


def test_a_lock_left_by_a_dead_process_is_taken_over(tiny, tmp_path, capsys):
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / run_folder.LOCK_NAME).write_text(json.dumps(
        {"host": socket.gethostname(), "pid": dead.pid, "started": "earlier"}))
    (tmp_path / "ckpt-8_temp").mkdir()  # what a write killed midway leaves
    summary = train.run(tiny(tmp_path, lineareval_while_pretraining=False))
    out = capsys.readouterr().out
    assert f"taking over {tmp_path}/{run_folder.LOCK_NAME}" in out
    assert "cleaned 1 partial checkpoint or export write(s)" in out
    assert summary["global_step"] == 4
    assert not (tmp_path / run_folder.LOCK_NAME).exists()  # released at the end
    assert not (tmp_path / "ckpt-8_temp").exists()


def test_model_dir_that_is_a_file_is_named(tiny, tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ValueError, match="is a file; give a folder"):
        train.run(tiny(path, lineareval_while_pretraining=False))


def _steps_done(out):
    """The steps a run started by ``_with_fault("report-steps=1", ...)`` reported done."""
    return [int(step) for step in re.findall(r"^test: step (\d+) done$", out, re.MULTILINE)]


def _interrupt(cmd, sig, after_step):
    """Runs ``cmd`` with every step reported from inside its loop, sends ``sig`` once step
    ``after_step`` is done and waits for the run to stop; returns its output and the step of
    the checkpoint the signal saved."""
    run = _Run(_with_fault("report-steps=1", cmd))
    assert run.wait_for(f"test: step {after_step} done", timeout=PATIENCE), \
        f"step {after_step} never reported done: " + "".join(run.lines)[-3000:]
    run.proc.send_signal(sig)
    try:
        run.proc.wait(timeout=PATIENCE)
    except subprocess.TimeoutExpired:
        last = _steps_done(run.kill())[-1:]
        pytest.fail(f"{signal.Signals(sig).name} sent after step {after_step}: the run was "
                    f"still training {PATIENCE} s later (steps done: {last})")
    out = run.kill()
    assert run.proc.returncode == 128 + sig, out[-3000:]
    line = [x for x in out.splitlines() if "received: saved checkpoint" in x]
    assert len(line) == 1 and line[0].startswith(signal.Signals(sig).name), out[-3000:]
    step = int(line[0].rsplit("at step ", 1)[1].split(";")[0])
    # It stopped before the step after the one under way: its checkpoint holds the last step
    # it ran, none lost, none run after the stop.
    done = _steps_done(out)
    assert done[-1] == step >= after_step, (done[-5:], step)
    return out, step


def test_sigterm_and_sigint_stop_the_loop_at_the_next_step_and_the_next_run_continues(tmp_path):
    model_dir = tmp_path / "run"
    # One loop of 10^6 steps inside one tf.function: only the stop checked before each step
    # ends it (the run would take hours to reach the loop's end).
    loop = ["--checkpoint_steps=1000000", "--steps_per_loop=1000000", "--keep_hub_module_max=0"]
    cmd = _pretrain_cmd(model_dir, "--train_steps=1000000", *loop)
    previous_step = 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        # A step into this run's loop (the second run resumes from the first's checkpoint).
        out, step = _interrupt(cmd, sig, after_step=previous_step + 1)
        if previous_step:
            assert f"resumed from {model_dir}/ckpt-{previous_step} at step " \
                f"{previous_step}" in out, out[-3000:]
            assert _steps_done(out)[0] == previous_step + 1, out[-3000:]  # none run twice
        assert _complete_checkpoints(model_dir)[-1].endswith(f"ckpt-{step}")
        previous_step = step
    last = previous_step + 3  # the same run, ended 3 steps later
    final = subprocess.run(_pretrain_cmd(model_dir, f"--train_steps={last}", *loop), cwd=ROOT,
                           capture_output=True, text=True, timeout=PATIENCE)
    assert final.returncode == 0, final.stderr[-3000:]
    assert f"resumed from {model_dir}/ckpt-{previous_step}" in final.stdout
    assert json.loads((model_dir / "summary.json").read_text())["global_step"] == last


def _poison_loss(monkeypatch, bad):
    """NT-Xent returns NaN on the calls (steps) for which ``bad(call)`` holds."""
    from simclr_tf.losses import nt_xent  # the part --loss=nt_xent runs
    original, calls = nt_xent.nt_xent, tf.Variable(0)

    def poisoned(*args, **kwargs):
        loss, logits, labels = original(*args, **kwargs)
        n = calls.assign_add(1)
        return tf.where(bad(n), tf.constant(float("nan")), loss), logits, labels

    monkeypatch.setattr(nt_xent, "nt_xent", poisoned)


def test_nonfinite_stop_names_the_step_the_loss_and_the_kept_checkpoint(tiny, tmp_path,
                                                                        monkeypatch):
    _poison_loss(monkeypatch, lambda n: n >= 3)
    with pytest.raises(train.NonFiniteLossError) as info:
        train.run(tiny(tmp_path, lineareval_while_pretraining=False, train_steps=6))
    message = str(info.value)
    assert "non-finite at step 3 (loss nan)" in message
    assert f"The last good checkpoint, {tmp_path}/ckpt-2, is kept." in message
    assert [os.path.basename(p) for p in _complete_checkpoints(tmp_path)] == ["ckpt-2"]


def test_nonfinite_rollback_restores_skips_and_goes_on(tiny, tmp_path, monkeypatch, capsys):
    _poison_loss(monkeypatch, lambda n: tf.equal(n, 3))  # one bad batch, at step 3
    cfg = tiny(tmp_path, lineareval_while_pretraining=False, on_nonfinite="rollback",
               train_steps=6)
    summary = train.run(cfg)
    out = capsys.readouterr().out
    assert f"non-finite loss at step 3: rolled back to {tmp_path}/ckpt-2 (step 2)" in out
    assert summary["global_step"] == 6 and np.isfinite(summary["loss"])
    newest = os.path.join(str(tmp_path), os.path.basename(_complete_checkpoints(tmp_path)[-1]))
    reader = tf.train.load_checkpoint(newest)
    assert all(np.all(np.isfinite(reader.get_tensor(k)))
               for k, _ in tf.train.list_variables(newest) if k.startswith("model/"))


def test_nonfinite_rollback_gives_up_after_three_in_a_row(tiny, tmp_path, monkeypatch, capsys):
    assert train.MAX_ROLLBACKS == 3  # as documented; run with 2, since each costs a retrace
    monkeypatch.setattr(train, "MAX_ROLLBACKS", 2)
    _poison_loss(monkeypatch, lambda n: n >= 3)  # every batch from step 3 on diverges
    cfg = tiny(tmp_path, lineareval_while_pretraining=False, on_nonfinite="rollback",
               train_steps=6)
    with pytest.raises(train.NonFiniteLossError, match="Gave up after 2 rollbacks in a row"):
        train.run(cfg)
    assert capsys.readouterr().out.count("rolled back to") == 2
    assert [os.path.basename(p) for p in _complete_checkpoints(tmp_path)] == ["ckpt-2"]


def test_no_pickle_in_the_package():
    for path in glob.glob(os.path.join(ROOT, "simclr_tf", "**", "*.py"), recursive=True):
        text = open(path).read()
        assert "import pickle" not in text and "pickle." not in text, path


def _final_values(model_dir):
    prefix = tf.train.latest_checkpoint(str(model_dir))
    reader = tf.train.load_checkpoint(prefix)
    return prefix, {k: reader.get_tensor(k) for k, _ in tf.train.list_variables(prefix)
                    if k.startswith(("model/", "optimizer/")) and "iterator" not in k}


def test_deterministic_resume_after_a_kill_ends_bit_identical(tmp_path):
    def cmd(model_dir):
        return [sys.executable, "-m", "simclr_tf.cli.pretrain", "--flagfile=flags/smoke.flags",
                f"--model_dir={model_dir}", "--train_steps=8", "--checkpoint_steps=2",
                "--steps_per_loop=1", "--deterministic", "--keep_hub_module_max=0",
                "--nolineareval_while_pretraining"]

    # The uninterrupted run goes on beside the one that is killed (their start-ups overlap).
    whole = subprocess.Popen(cmd(tmp_path / "whole"), cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    run = _Run(cmd(tmp_path / "cut"))
    assert run.wait_for("step 5/8", timeout=300), "".join(run.lines)
    run.kill()  # SIGKILL in the middle: checkpoint 4 is the newest complete one
    _, whole_err = whole.communicate(timeout=600)
    assert whole.returncode == 0, whole_err[-3000:]
    resumed = subprocess.run(cmd(tmp_path / "cut"), cwd=ROOT, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    (prefix_a, a), (prefix_b, b) = _final_values(tmp_path / "whole"), \
        _final_values(tmp_path / "cut")
    assert prefix_a.endswith("ckpt-8") and prefix_b.endswith("ckpt-8")
    assert a.keys() == b.keys() and len(a) > 50
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)  # bit for bit


def test_partial_exports_are_cleaned_and_an_orphaned_old_export_put_back(tmp_path):
    exports = tmp_path / "saved_model"
    (exports / ".tmp-8-4242").mkdir(parents=True)  # killed while writing export 8
    (exports / ".tmp-6-4242-old-17").mkdir()        # killed between the two renames of 6
    (exports / ".tmp-6-4242-old-17" / "saved_model.pb").write_bytes(b"previous export")
    (exports / "4").mkdir()
    (exports / ".tmp-4-4242-old-9").mkdir()         # 4 was replaced completely: stale copy
    assert export_lib.remove_partial_exports(str(tmp_path)) == 3
    assert sorted(p.name for p in exports.iterdir()) == ["4", "6"]
    assert (exports / "6" / "saved_model.pb").read_bytes() == b"previous export"
