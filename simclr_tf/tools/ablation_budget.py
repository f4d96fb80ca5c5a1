"""``simclr-ablate --budget_minutes``: the pretraining length that fits a study into a time.

Short probe runs in ``DIR/_probe`` measure this machine on the study's flags (with those of
its middle cell, ``probe_config``): a pretraining of ``WARM`` steps (it pays what only the
first run of a process pays), then two fresh pretrainings of ``SHORT`` and ``LONG`` steps,
each paying what every cell's run pays (start-up, the step-0 evaluation and view grid,
compilation, the final evaluation and the SavedModel export): the difference of their wall
times is ``LONG - SHORT`` steps, and what is left of the short one is a run's overhead; then
one linear evaluation. (The first design resumed the warm-up run for the two timed runs,
which skipped the step-0 evaluation, and did not export: the studies ran 5-16% over. And a
difference of 40 steps, ~8 s, was too short to time: two probes of one study measured 0.18
and 0.23 s per step; 100 steps halve the noise's share.) The study's time is then modelled
as

    runs x overhead + linear evaluations x their time + steps x sum of lengths x step time,

where a cell's length scales its examples (a cell with another batch trains the same
examples in more or fewer steps; a supervised run is counted as a pretraining run, a little
more than it costs), and solved for the steps at the run's batch that fill ``MARGIN`` of the
budget (cells' runs vary by a few per cent around the probe's).

A step's time is modelled as a fixed part plus a part proportional to the batch: when the
study's cells change the batch, the probe also times its smallest batch (warm-up, short and
long runs of its own in ``_probe/pretrain_b<batch>_*``, the long one as many examples longer
as at the run's batch), and the two points give both parts. (Charging every example at the
run's batch's cost had the batch study, whose batch-32 cells make four times the steps, run
10% over.) Like the probes, the sized runs checkpoint and evaluate once, at the end. The
sizing is kept in ``DIR/budget.json``: a resumed study reuses it, so its cells stay
comparable. A probe starts afresh: the runs of an earlier one (a budget refused as too short)
are removed first, since finished runs would train, and so time, nothing.
"""

import dataclasses
import json
import os
import time
from typing import Callable, Dict, Optional, Tuple

import tensorflow as tf

from simclr_tf.core import config as config_lib
from simclr_tf.tools import ablation_studies as studies
from simclr_tf.tools import demo
from simclr_tf.training import train

BUDGET_FILE = "budget.json"
PROBE_DIR = "_probe"
WARM, SHORT, LONG = 5, 10, 110
MIN_STEPS = 20
MARGIN = 0.95  # of the budget the steps are solved for: the runs' times vary by a few %
MAX_MINUTES = 43_200  # 30 days: past that, a budget is a typo (and its steps overflow)


def check_minutes(budget_minutes: float):
    """Raises ValueError, in one line, unless ``budget_minutes`` is in (0, MAX_MINUTES]."""
    if not 0 < budget_minutes <= MAX_MINUTES:  # also refuses nan
        raise ValueError(f"--budget_minutes={budget_minutes:g} is out of range: give minutes "
                         f"in (0, {MAX_MINUTES}] (30 days), or 0 to train the flags' "
                         "--train_steps / --train_epochs.")


@dataclasses.dataclass(frozen=True)
class Timing:
    seconds_per_step: float  # pretraining at the run's batch, steady state
    run_overhead: float  # seconds of a run's start-up, compilation, evaluation and export
    linear_seconds: float  # one linear evaluation, all included
    probe_seconds: float  # what measuring took
    step_fixed: float = 0.0  # the part of a step that does not grow with the batch (0: none)


def _timed(cfg: config_lib.Config, before_run) -> float:
    demo.prepare(cfg, before_run)
    start = time.time()
    train.run(cfg)
    return time.time() - start


def _step_time(cfg: config_lib.Config, model_dir: str, before_run,
               long: Optional[int] = None) -> Tuple[float, float, config_lib.Config]:
    """(seconds per step, a run's overhead, the long probe's config) of ``cfg``'s
    pretraining, from three runs in ``model_dir_{warm,short,long}``: a warm-up, then two
    fresh runs of SHORT and ``long`` (default LONG) steps."""
    def fresh(name: str, steps: int) -> config_lib.Config:
        return dataclasses.replace(  # exporting at the end, as every cell's pretraining does
            cfg, model_dir=f"{model_dir}_{name}", train_steps=steps, checkpoint_steps=steps,
            steps_per_loop=steps).validate()

    long = long or LONG
    _timed(fresh("warm", WARM), before_run)
    short = _timed(fresh("short", SHORT), before_run)
    probe = fresh("long", long)
    per_step = max(_timed(probe, before_run) - short, 1e-3) / (long - SHORT)
    return per_step, max(short - SHORT * per_step, 0.0), probe


def measure(cfg: config_lib.Config, linear, root: str,
            before_run: Optional[Callable[[config_lib.Config], None]] = None,
            other_batch: Optional[int] = None) -> Timing:
    """Probe runs of ``cfg`` (the study's flags) in ``root/_probe``; ``other_batch`` (the
    study's smallest other batch) is timed too, for the part of a step that does not grow
    with the batch."""
    start = time.time()
    probes = os.path.join(root, PROBE_DIR)
    if tf.io.gfile.isdir(probes):  # runs of an earlier probe, finished: they would train
        tf.io.gfile.rmtree(probes)  # nothing and time nothing; every probe starts afresh
    per_step, overhead, probe = _step_time(cfg, os.path.join(root, PROBE_DIR, "pretrain"),
                                           before_run)
    fixed = 0.0
    if other_batch and other_batch != cfg.train_batch_size:
        # As many examples between its two timed runs as at the run's batch: a smaller
        # batch's steps are short, and 100 of them too few to time against the noise.
        other = dataclasses.replace(cfg, train_batch_size=other_batch)
        long = SHORT + max(1, round((LONG - SHORT) * cfg.train_batch_size / other_batch))
        other_step, _, _ = _step_time(
            other, os.path.join(root, PROBE_DIR, f"pretrain_b{other_batch}"), before_run, long)
        fixed = affine_fixed(per_step, cfg.train_batch_size, other_step, other_batch)
    lin = demo.linear_eval_config(probe, os.path.join(root, PROBE_DIR, "linear"),
                                  probe.model_dir, linear.steps, linear.learning_rate,
                                  linear.batch_size).validate()
    linear_seconds = _timed(lin, before_run)
    return Timing(per_step, overhead, linear_seconds, time.time() - start, fixed)


def affine_fixed(step: float, batch: int, other_step: float, other_batch: int) -> float:
    """The batch-independent part ``a`` of step times ``a + b x batch`` through the two
    measured points, kept within [0, ``step``] (noise can put the line's foot below 0; a
    smaller batch no faster makes the whole step fixed)."""
    slope = (step - other_step) / (batch - other_batch)
    return min(max(step - slope * batch, 0.0), step)


def step_seconds(timing: Timing, batch: int, base_batch: int) -> float:
    """A step's time at ``batch``, from the one measured at ``base_batch``."""
    return timing.step_fixed + (timing.seconds_per_step - timing.step_fixed) * batch / base_batch


def probe_config(study: studies.Study, cfg: config_lib.Config) -> config_lib.Config:
    """``cfg`` with the flags of the study's middle cell (its input pipeline, loss, head),
    but not its batch: the probe times steps at the batch the budget sizes. (Probing the
    run's own flags had the augmentation-pairs study, whose cells transform each image in
    the input pipeline, run 24% over its budget.)"""
    middle = study.cells[len(study.cells) // 2]
    overrides = {k: v for k, v in middle.overrides.items() if k != "train_batch_size"}
    return dataclasses.replace(cfg, **overrides)


def smallest_other_batch(study: studies.Study, cfg: config_lib.Config) -> Optional[int]:
    """The smallest batch of ``study``'s cells other than the run's, if any."""
    batches = {c.overrides.get("train_batch_size", cfg.train_batch_size) for c in study.cells}
    batches.discard(cfg.train_batch_size)
    return min(batches) if batches else None


def steps_for(study: studies.Study, cfg: config_lib.Config, timing: Timing,
              budget_minutes: float) -> int:
    """The pretraining steps (at ``cfg``'s batch) that fit ``study`` into the budget left
    after the probe; an error naming the budget needed when not even ``MIN_STEPS`` fit."""
    base = cfg.train_batch_size
    cost: Dict[str, float] = {}  # seconds per step of the run (at ``base``), by training run
    for c in study.cells:
        batch = c.overrides.get("train_batch_size", base)
        run = f"supervised:{c.name}" if c.supervised else c.pretrain_name
        cost[run] = c.length * base / batch * step_seconds(timing, batch, base)
    runs = len(cost)
    linears = sum(not c.supervised for c in study.cells)
    fixed = runs * timing.run_overhead + linears * timing.linear_seconds + timing.probe_seconds
    per_step = sum(cost.values())
    steps = int((MARGIN * budget_minutes * 60 - fixed) / per_step)
    if steps < MIN_STEPS:
        needed = (fixed + MIN_STEPS * per_step) / 60 / MARGIN
        raise ValueError(
            f"--budget_minutes={budget_minutes:g} is too short for --study={study.name} on "
            f"this machine: its {len(study.cells)} cells need at least {needed:.0f} minutes "
            f"for {MIN_STEPS} pretraining steps each at batch {cfg.train_batch_size} "
            f"(measured: {timing.seconds_per_step:.2f} s per step, {timing.run_overhead:.0f} s "
            f"per run, {timing.linear_seconds:.0f} s per linear evaluation). Give more "
            "minutes, or smaller runs (flags/demo.flags: a width-0.25 ResNet-18 at 24 px).")
    return steps


def sized(study: studies.Study, cfg: config_lib.Config, linear, budget_minutes: float,
          before_run=None) -> config_lib.Config:
    """``cfg`` with the ``train_steps`` that fit the budget: measured and solved the first
    time (and kept in ``DIR/budget.json``), read back when the study resumes."""
    path = os.path.join(cfg.model_dir, BUDGET_FILE)
    if os.path.exists(path):
        with open(path) as f:
            kept = json.load(f)
        print(f"ablate {study.name}: the cells keep the sizing of {path}: "
              f"{kept['train_steps']} steps (budget {kept['budget_minutes']:g} min)", flush=True)
        return _with_steps(cfg, kept["train_steps"])
    print(f"ablate {study.name}: measuring this machine for --budget_minutes="
          f"{budget_minutes:g} (probe runs in {os.path.join(cfg.model_dir, PROBE_DIR)})",
          flush=True)
    timing = measure(probe_config(study, cfg), linear, cfg.model_dir, before_run,
                     smallest_other_batch(study, cfg))
    steps = steps_for(study, cfg, timing, budget_minutes)
    record: Dict = {"budget_minutes": budget_minutes, "train_steps": steps,
                    "train_batch_size": cfg.train_batch_size, **dataclasses.asdict(timing)}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, path)
    fixed = (f", {timing.step_fixed:.3f} s of it whatever the batch" if timing.step_fixed
             else "")
    print(f"ablate {study.name}: {steps} pretraining steps per cell at batch "
          f"{cfg.train_batch_size} ({timing.seconds_per_step:.3f} s per step{fixed}, "
          f"{timing.run_overhead:.0f} s per run, {timing.linear_seconds:.0f} s per linear "
          "evaluation)", flush=True)
    return _with_steps(cfg, steps)


def _with_steps(cfg: config_lib.Config, steps: int) -> config_lib.Config:
    """``steps`` of training, checkpointed and evaluated once, at the end, as the probe
    runs are (each evaluation during a run would be time the budget did not measure)."""
    return dataclasses.replace(cfg, train_steps=steps, checkpoint_steps=steps,
                               steps_per_loop=min(cfg.steps_per_loop, steps)).validate()
