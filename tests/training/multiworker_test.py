"""Two worker processes on 127.0.0.1 pretrain together with MultiWorkerMirroredStrategy
(with the batch embedded in chunks, and without)."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# How long the workers may take to reach what a test waits for before it gives up: a safety
# net only, far longer than any machine needs.
PATIENCE = 600

WORKER = textwrap.dedent("""
    import hashlib, json, sys
    import numpy as np
    import simclr_tf
    from simclr_tf.data import pipeline
    from simclr_tf.data import sources
    from simclr_tf.runs import strategies
    from simclr_tf.training import train
    from simclr_tf.cli.flags import from_flagfile

    model_dir, out = sys.argv[1], sys.argv[2]
    strategy = strategies.get_strategy("multi_worker")  # before any other TF op
    # Each worker's 8 images embedded in 2 chunks (--embedding_chunks): the chunked step's
    # collectives (the gathered negatives, global batch norm per chunk) across processes.
    # The other test here runs the one-pass step on two workers.
    # The kernels are the fixed choice: the weights are compared bit for bit, and measured
    # choices would rest on timings (each worker's own, under the suite's load).
    cfg = from_flagfile("flags/smoke.flags", model_dir=model_dir, global_bn=True,
                        strategy="multi_worker", train_steps=4, checkpoint_steps=2,
                        embedding_chunks=2, calibrate_kernels=False)

    def record(model):  # a digest of every weight's bytes: equal means bit for bit
        digests = [hashlib.sha256(np.ascontiguousarray(w).tobytes()).hexdigest()
                   for w in model.get_weights()]
        with open(out, "w") as f:
            json.dump({"digests": digests}, f)

    summary = train.run(cfg, strategy=strategy, on_end=record)
    with open(out + ".summary", "w") as f:
        json.dump(summary, f)

    # The training input as train.run builds it (its own builder), from a source whose
    # labels are the examples' indices: which examples does this worker feed in each step?
    class Indexed(sources.BuiltinSource):
        def _columns(self, name):
            images, labels = super()._columns(name)
            return images, np.arange(len(labels), dtype=np.int32)

    ds = train.build_inputs(cfg, strategy, Indexed(seed=cfg.seed)).train_ds
    it = iter(ds)
    steps = []
    for _ in range(3):
        local = strategy.experimental_local_results(next(it)[1])
        steps.append([int(i) for part in local for i in part.numpy()])
    with open(out + ".indices", "w") as f:
        json.dump(steps, f)
""")


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_agree_and_only_the_chief_writes(tmp_path):
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    model_dir = tmp_path / "run"
    procs = _start_workers(tmp_path, workers, lambda index: [
        "-c", WORKER, str(model_dir), str(tmp_path / f"w{index}.json")], "worker")
    _wait_all(procs, PATIENCE, "the two workers to finish 4 steps")
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert all(p.returncode == 0 for p in procs), "\n\n".join(s[-3000:] for s in logs)

    chief = json.loads((tmp_path / "w0.json").read_text())
    other = json.loads((tmp_path / "w1.json").read_text())
    assert len(chief["digests"]) > 20
    assert chief["digests"] == other["digests"]  # the same weights, bit for bit
    for index in range(2):
        summary = json.loads((tmp_path / f"w{index}.json.summary").read_text())
        assert summary["global_step"] == 4
    # Only the chief wrote into model_dir; the other worker's private folder is gone.
    names = set(os.listdir(model_dir))
    assert {"ckpt-4.index", "summary.json", "saved_model", "train"} <= names
    assert json.loads((model_dir / "summary.json").read_text())["global_step"] == 4
    assert os.listdir(tmp_path / "tmp1") == []
    # The input is sharded: in each step the workers feed different examples, none twice.
    steps = [json.loads((tmp_path / f"w{i}.json.indices").read_text()) for i in range(2)]
    for first, second in zip(*steps):
        assert len(first) == len(second) == 8  # half of the global batch of 16 each
        assert len(set(first) | set(second)) == 16, (first, second)
    assert "2 replica(s)" in logs[0]


def _start_workers(tmp_path, workers, argv, tag):
    """One process per worker, ``python *argv(index)``, its output in ``tmp_path/<tag><index>.log``
    and its temporary files in ``tmp_path/tmp<index>``."""
    procs = []
    for index in range(len(workers)):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                   TMPDIR=str(tmp_path / f"tmp{index}"),
                   TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                         "task": {"type": "worker", "index": index}}))
        os.makedirs(env["TMPDIR"], exist_ok=True)
        with open(tmp_path / f"{tag}{index}.log", "w") as log:
            procs.append(subprocess.Popen([sys.executable, *argv(index)], cwd=ROOT, env=env,
                                          stdout=log, stderr=subprocess.STDOUT, text=True))
    return procs


def _pretrain_argv(args, report_steps=False):
    """``simclr-pretrain`` on the smoke run with ``args``; with ``report_steps``, through
    tests/fault_launcher.py, each step printing ``test: step S done`` inside the loop."""
    program = ["-m", "simclr_tf.cli.pretrain"]
    if report_steps:
        program = [os.path.join(ROOT, "tests", "fault_launcher.py"), "report-steps=1",
                   "simclr_tf.cli.pretrain"]
    return lambda index: [*program, "--flagfile=flags/smoke.flags", "--strategy=multi_worker",
                          *args]


def _wait_all(procs, timeout, what):
    """Waits for every process; fails naming ``what`` if one still runs ``timeout`` s later."""
    try:
        for p in procs:
            p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still waiting for {what} after {timeout} s")
    finally:  # on a timeout or an error, do not leave a worker behind
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _steps_done(log):
    """The steps a worker started with ``report_steps`` reported done."""
    return [int(step) for step in re.findall(r"^test: step (\d+) done$", log, re.MULTILINE)]


def test_sigterm_to_one_worker_stops_both_at_the_next_step_and_they_resume(tmp_path):
    # A SIGTERM to the non-chief inside one loop of 100,000 steps (hours: only the stop agreed
    # before each step ends it): both workers stop before the same step, the chief saves
    # that checkpoint into model_dir, both exit 128 + 15, and the same command (both workers
    # again) resumes from it.
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    model_dir = tmp_path / "run"
    args = [f"--model_dir={model_dir}", "--train_steps=100000", "--checkpoint_steps=100000",
            "--steps_per_loop=100000", "--eval_steps=1", "--noknn_monitor"]
    procs = _start_workers(tmp_path, workers, _pretrain_argv(args, report_steps=True), "first")
    log1 = tmp_path / "first1.log"
    try:
        deadline = time.monotonic() + PATIENCE  # a safety net, not a measure
        while 3 not in _steps_done(log1.read_text()):  # training is under way, in the loop
            assert all(p.poll() is None for p in procs), log1.read_text()[-3000:]
            assert time.monotonic() < deadline, \
                f"no step 3 in {PATIENCE} s:\n{log1.read_text()[-3000:]}"
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGTERM)
        _wait_all(procs, PATIENCE, "both workers to stop after a SIGTERM to worker 1")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    logs = [(tmp_path / f"first{i}.log").read_text() for i in range(2)]
    assert [p.returncode for p in procs] == [128 + signal.SIGTERM] * 2, logs
    saved = [re.search(r"saved checkpoint (\S+) at step (\d+)", log) for log in logs]
    assert all(saved), logs
    step = int(saved[0].group(2))
    assert int(saved[1].group(2)) == step and 3 <= step < 100000
    # Each worker's last step is the saved one: they stopped together, before the same step.
    assert [_steps_done(log)[-1] for log in logs] == [step, step]
    assert "a signal reached another worker" in logs[0]
    assert "SIGTERM received: the chief saved" in logs[1]
    checkpoint = str(model_dir / f"ckpt-{step}")
    assert saved[0].group(1) == saved[1].group(1) == checkpoint
    assert _latest_checkpoint(model_dir) == checkpoint
    assert os.listdir(tmp_path / "tmp1") == []  # the non-chief's private folder is gone

    procs = _start_workers(tmp_path, workers, _pretrain_argv(
        [*args[:1], f"--train_steps={step + 2}", "--checkpoint_steps=1000", "--eval_steps=1"]),
        "second")
    _wait_all(procs, PATIENCE, "the two workers to resume and finish 2 steps")
    logs = [(tmp_path / f"second{i}.log").read_text() for i in range(2)]
    assert [p.returncode for p in procs] == [0, 0], [log[-3000:] for log in logs]
    assert f"resumed from {checkpoint} at step {step}" in logs[0]
    assert json.loads((model_dir / "summary.json").read_text())["global_step"] == step + 2


def _latest_checkpoint(model_dir):
    import tensorflow as tf  # noqa: PLC0415 (only here: the workers are other processes)

    return tf.train.latest_checkpoint(str(model_dir))
