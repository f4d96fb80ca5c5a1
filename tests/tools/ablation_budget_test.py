"""simclr-ablate --budget_minutes (ablation_budget.py): the solve from measured times, the
probe's runs (with a fake clock: what they run and how their times are read), a probe that
starts afresh whatever an earlier one left, the range of the minutes, and a tiny mixed study
end to end with a budget (a shared pretraining, a supervised cell), resumed only with its
first settings."""

import dataclasses
import json
import os
import re
import types

import pytest

from simclr_tf.tools import ablation, ablation_budget
from simclr_tf.tools import ablation_studies as studies
from simclr_tf.training import train

LINEAR = ablation.LinearSettings(steps=2, learning_rate=0.2, batch_size=8)
TINY_STUDY = studies.Study(
    "tiny", "Two temperatures", (studies.Cell("a", "t 0.5", {"temperature": 0.5}),
                                 studies.Cell("b", "t 1", {"temperature": 1.0})), "a test")


def test_the_budget_is_solved_from_the_measured_times(tiny):
    timing = ablation_budget.Timing(seconds_per_step=0.5, run_overhead=10.0,
                                    linear_seconds=20.0, probe_seconds=30.0)
    cfg = tiny("unused")
    # TINY_STUDY: 2 pretrainings (10 s each) + 2 linear evaluations (20 s each) + probe 30 s
    # = 90 s fixed; 95% of 10 minutes (570 s) leave 480 s for 2 x 0.5 s per step.
    assert ablation_budget.MARGIN == 0.95
    assert ablation_budget.steps_for(TINY_STUDY, cfg, timing, 10) == 480
    heads = studies.STUDIES["projection_head"]  # 3 pretrainings, 5 linear evaluations
    assert ablation_budget.steps_for(heads, cfg, timing, 10) == int(
        (570 - 30 - 100 - 30) / 1.5)
    with pytest.raises(ValueError, match=r"--budget_minutes=1 is too short for --study=tiny.*"
                                         r"at least 2 minutes"):
        ablation_budget.steps_for(TINY_STUDY, cfg, timing, 1)


def test_a_batch_study_charges_each_batch_its_own_step_time(tiny):
    # Steps cost 0.1 s + 0.4 s x batch / 128: at 128 0.5 s, at 32 0.2 s, at 512 1.7 s.
    assert ablation_budget.affine_fixed(0.5, 128, 0.2, 32) == pytest.approx(0.1)
    assert ablation_budget.affine_fixed(0.5, 128, 0.1, 32) == 0.0  # noise: foot below 0
    assert ablation_budget.affine_fixed(0.5, 128, 0.6, 32) == 0.5  # no growth: all fixed
    timing = ablation_budget.Timing(seconds_per_step=0.5, run_overhead=10.0,
                                    linear_seconds=20.0, probe_seconds=30.0, step_fixed=0.1)
    cfg = tiny("unused", train_batch_size=128)
    # Per step of the run (batch 128): b32 makes 4 steps of 0.2 s, b128 one of 0.5 s, b512 a
    # quarter of 1.7 s: 1.725 s, and twice that for the 2x cells: 5.175 s. Fixed: 6 runs x
    # 10 s + 6 linear evaluations x 20 s + 30 s = 210 s; 95% of 10 minutes: 570 s.
    study = studies.STUDIES["batch_size"]
    assert ablation_budget.steps_for(study, cfg, timing, 10) == int((570 - 210) / 5.175)
    # Without the fixed part every example costs the same: 3 x 3 x 0.5 s per step.
    flat = dataclasses.replace(timing, step_fixed=0.0)
    assert ablation_budget.steps_for(study, cfg, flat, 10) == int((570 - 210) / 4.5)


def test_the_probe_times_the_smallest_other_batch_of_a_batch_study(tiny, tmp_path, monkeypatch):
    done = {}

    def fake_timed(c, before_run):  # 7 s per run, 0.1 s + 0.4 s x batch / 128 per step
        if c.model_dir.endswith("linear"):
            return 3.0
        steps = c.train_steps - done.get(c.model_dir, 0)
        done[c.model_dir] = c.train_steps
        return 7.0 + steps * (0.1 + 0.4 * c.train_batch_size / 128)

    monkeypatch.setattr(ablation_budget, "_timed", fake_timed)
    cfg = tiny(tmp_path / "s", train_batch_size=128)
    study = studies.STUDIES["batch_size"]
    assert ablation_budget.smallest_other_batch(study, cfg) == 32
    assert ablation_budget.smallest_other_batch(TINY_STUDY, cfg) is None
    timing = ablation_budget.measure(cfg, LINEAR, str(tmp_path / "s"), other_batch=32)
    # A warm-up, then two fresh runs (each pays a run's overhead, as every cell does); at
    # batch 32 the long run is 4 x 100 steps longer than the short one: the same images.
    assert {os.path.relpath(d, tmp_path): n for d, n in done.items()} == {
        "s/_probe/pretrain_warm": 5, "s/_probe/pretrain_short": 10,
        "s/_probe/pretrain_long": 110, "s/_probe/pretrain_b32_warm": 5,
        "s/_probe/pretrain_b32_short": 10, "s/_probe/pretrain_b32_long": 410}
    assert timing.seconds_per_step == pytest.approx(0.5)
    assert timing.step_fixed == pytest.approx(0.1)
    assert timing.run_overhead == pytest.approx(7.0) and timing.linear_seconds == 3.0


def test_the_probe_runs_a_middle_cell_at_the_run_batch(tiny):
    cfg = tiny("unused")
    pairs = ablation_budget.probe_config(studies.STUDIES["augmentation_pairs"], cfg)
    assert pairs.augmentations == "sobel" and pairs.augment_one_view
    batches = ablation_budget.probe_config(studies.STUDIES["batch_size"], cfg)
    assert batches == cfg  # its middle cell changes only the batch, which the probe keeps


def _head_inputs(run_dir) -> int:
    import tensorflow as tf  # noqa: PLC0415

    latest = tf.train.latest_checkpoint(str(run_dir))
    shapes = [shape for name, shape in tf.train.list_variables(latest)
              if name == "model/supervised_head/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE"]
    assert len(shapes) == 1, shapes
    return shapes[0][0]


def test_shared_pretraining_supervised_cells_and_the_budget(tiny, tmp_path, monkeypatch):
    study = studies.Study("mixed", "mixed", (
        studies.Cell("h", "on h", {}, pretrain="enc"),
        studies.Cell("gh", "on g(h)", {}, pretrain="enc", linear={"ft_proj_selector": -1}),
        studies.Cell("sup", "supervised", {"augmentations": "crop,sobel"}, supervised=True)),
        "a test")
    calls = []
    original = train.run
    monkeypatch.setattr(train, "run", lambda c, **kw: calls.append(
        (os.path.relpath(c.model_dir, tmp_path), c.train_steps)) or original(c, **kw))
    monkeypatch.setattr(ablation_budget, "steps_for", lambda *a: 3)  # the solve is tested above
    monkeypatch.setattr(ablation_budget, "LONG", 12)  # the probe's runs, shorter
    cfg = tiny(tmp_path / "s", train_steps=2, checkpoint_steps=2, steps_per_loop=2)
    results = ablation.run(study, cfg, LINEAR, budget_minutes=5)
    probe = [c for c in calls if c[0].startswith("s/_probe")]
    assert probe == [("s/_probe/pretrain_warm", 5), ("s/_probe/pretrain_short", 10),
                     ("s/_probe/pretrain_long", 12), ("s/_probe/linear", 2)]
    cells = calls[len(probe):]
    assert cells == [("s/enc/pretrain", 3), ("s/h/linear", 2), ("s/gh/linear", 2),
                     ("s/sup/supervised", 3)]  # the shared pretraining ran once
    with open(tmp_path / "s" / "budget.json") as f:
        kept = json.load(f)
    assert kept["train_steps"] == 3 and kept["seconds_per_step"] > 0
    with open(tmp_path / "s" / "sup" / "supervised" / "summary.json") as f:
        assert results["sup"] == {"top1": json.load(f)["top1"], "knn_top1": None}
    # One encoder, two taps: the linear head reads h (width 128) or g(h) (proj_out_dim 16).
    assert _head_inputs(tmp_path / "s" / "h" / "linear") == 128
    assert _head_inputs(tmp_path / "s" / "gh" / "linear") == 16
    # Resumed: the kept sizing, no probe, nothing trained again; with another budget, refused.
    calls.clear()
    assert ablation.run(study, cfg, LINEAR, budget_minutes=5) == results
    assert calls == []
    with pytest.raises(ValueError, match=r"--budget_minutes=5 then, --budget_minutes=50 "
                                         r"now\): a resumed study keeps its first flags"):
        ablation.run(study, cfg, LINEAR, budget_minutes=50)
    assert calls == []




def _runs_like_train(c, before_run):
    """A fake ``_timed``: like ``train.run``, a run trains only the steps its folder lacks
    (kept in the folder, as its checkpoint would be): 7 s a run, 0.5 s a step; 3 s a linear
    evaluation."""
    os.makedirs(c.model_dir, exist_ok=True)
    done_file = os.path.join(c.model_dir, "steps_done")
    done = int(open(done_file).read()) if os.path.exists(done_file) else 0
    with open(done_file, "w") as f:
        f.write(str(c.train_steps))
    return 3.0 if c.model_dir.endswith("linear") else 7.0 + 0.5 * (c.train_steps - done)


def test_a_probe_starts_afresh_whatever_an_earlier_one_left(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(ablation_budget, "_timed", _runs_like_train)
    monkeypatch.setattr(ablation_budget, "time", types.SimpleNamespace(time=lambda: 0.0))
    cfg = tiny(tmp_path / "s")
    # 2 runs x 7 s + 2 x 3 s + the probe (measured: 0 s with the fake) + 2 x 20 x 0.5 s per
    # step: the minimum at 20 steps is 34 s, / 0.95: more than half a minute.
    with pytest.raises(ValueError, match=r"--budget_minutes=0.5 is too short .* need at least "
                                         r"1 minutes .* 0.50 s per step"):
        ablation_budget.sized(TINY_STUDY, cfg, LINEAR, 0.5)
    assert not os.path.exists(tmp_path / "s" / ablation_budget.BUDGET_FILE)
    # Again with more minutes: the finished probe runs of the refused one are not re-timed
    # (they would train nothing, "taking" no time per step).
    sized = ablation_budget.sized(TINY_STUDY, cfg, LINEAR, 10)
    # 95% of 600 s, less 2 x 7 s and 2 x 3 s, over 2 x 0.5 s per step.
    assert sized.train_steps == int((570 - 20) / 1.0) == 550
    with open(tmp_path / "s" / ablation_budget.BUDGET_FILE) as f:
        assert json.load(f)["seconds_per_step"] == pytest.approx(0.5)


@pytest.mark.parametrize("minutes", [1e30, float("inf"), float("nan"), 43_200.5, -1.0])
def test_minutes_out_of_range_are_refused_before_any_work(minutes, tiny, tmp_path,
                                                           monkeypatch):
    calls = []
    monkeypatch.setattr(train, "run", lambda c, **kw: calls.append(c.model_dir))
    shown = re.escape(f"{minutes:g}")
    with pytest.raises(ValueError, match=rf"^--budget_minutes={shown} is out of range: "
                                         r"give minutes in \(0, 43200\] \(30 days\)"):
        ablation.run(TINY_STUDY, tiny(tmp_path / "s"), LINEAR, budget_minutes=minutes)
    assert calls == [] and not os.path.exists(tmp_path / "s")
    ablation_budget.check_minutes(43_200)  # the end of the range is taken
