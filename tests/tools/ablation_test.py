"""simclr-ablate: the studies' cells, the table and chart from fixed results, the budget's
arithmetic, and a tiny study end to end with its resume (a finished run is never trained
again), a shared pretraining and a supervised cell."""

import dataclasses
import json
import os

import numpy as np
import pytest

from simclr_tf.core import choices
from simclr_tf.tools import ablation, ablation_budget, ablation_chart
from simclr_tf.tools import ablation_studies as studies
from simclr_tf.training import train

LINEAR = ablation.LinearSettings(steps=2, learning_rate=0.2, batch_size=8)
TINY_STUDY = studies.Study(
    "tiny", "Two temperatures", (studies.Cell("a", "temperature 0.5", {"temperature": 0.5}),
                                 studies.Cell("b", "temperature 1", {"temperature": 1.0}, 42.0)),
    "a test")


# The paper's figures by the row a reader sees in ablation.md (ImageNet, ResNet-50, linear
# evaluation top-1 %): table 1 (colour strength; the supervised row at its two ends), table 5
# (temperature, with the L2 norm) and table 4 (losses; "sh": semi-hard negatives).
PAPER_ROWS = {
    "color_strength": {"strength 1/8": 59.6, "strength 1/4": 61.0, "strength 1/2": 62.6,
                       "strength 1": 63.2, "strength 1 + blur": 64.5,
                       "supervised, strength 1/8": 77.0, "supervised, strength 1 + blur": 75.4},
    "temperature": {"temperature 0.05": 59.7, "temperature 0.1": 64.4, "temperature 0.5": 60.7,
                    "temperature 1": 58.0},
    "loss": {"nt_xent": 63.9, "nt_logistic": 51.6, "margin_triplet": 50.9,
             "nt_logistic (semi-hard)": 57.9, "margin_triplet (semi-hard)": 57.5},
    "augmentation_pairs": {}, "projection_head": {}, "batch_size": {},  # figures: no table
}


@pytest.mark.parametrize("name", list(studies.STUDIES))
def test_the_table_gives_each_row_the_papers_figure(name):
    lines = ablation.table_lines(studies.STUDIES[name], {})
    rows = [line.strip("|").split(" | ") for line in lines
            if line.startswith("| ") and not line.startswith(("| cell", "| ---"))]
    shown = {row[0].strip(): row[-1].strip() for row in rows}
    assert len(shown) == len(studies.STUDIES[name].cells)  # one row a cell, labels unique
    assert {k: float(v) for k, v in shown.items() if v != "-"} == PAPER_ROWS[name]


def test_the_studies_set_the_papers_settings():
    colour = studies.STUDIES["color_strength"].cells
    simclr = [c for c in colour if not c.supervised]
    assert [c.overrides["color_jitter_strength"] for c in simclr] == [
        0.0, 0.125, 0.25, 0.5, 1.0, 1.0]
    assert [c.overrides["use_blur"] for c in simclr] == [False] * 5 + [True]
    supervised = [c for c in colour if c.supervised]
    assert [c.overrides["augmentations"] for c in supervised] == ["crop,color"] * 4 + [
        "crop,color,blur"]
    temperature = studies.STUDIES["temperature"].cells
    assert [c.overrides["temperature"] for c in temperature] == [0.05, 0.1, 0.5, 1.0]
    pairs = studies.STUDIES["augmentation_pairs"].cells
    assert len(pairs) == 49 and {c.row for c in pairs} == set(choices.AUGMENTATIONS)
    assert all(c.overrides["augment_one_view"] for c in pairs)
    assert [c.overrides["augmentations"] for c in pairs[:3]] == [
        "crop", "crop,cutout", "crop,color"]
    loss = {c.label: c.overrides for c in studies.STUDIES["loss"].cells}
    assert loss["margin_triplet (semi-hard)"]["loss"] == "margin_triplet"
    assert loss["margin_triplet (semi-hard)"]["semi_hard_negatives"] is True
    assert loss["nt_logistic"] == {"loss": "nt_logistic", "semi_hard_negatives": False}


@pytest.mark.parametrize("name", list(studies.STUDIES))
def test_every_cell_makes_valid_runs_in_its_own_folders(name, tiny, tmp_path):
    base = tiny(tmp_path, train_steps=400, checkpoint_steps=100)  # 4 checkpoints
    for cell in studies.STUDIES[name].cells:
        runs = ablation.cell_configs(base, cell, LINEAR, str(tmp_path))
        last = runs[-1]
        for key, value in cell.overrides.items():  # on the run that trains the encoder
            assert getattr(runs[0], key) == value, (cell.name, key)
        if cell.supervised:
            assert len(runs) == 1 and last.train_mode == "finetune"
            assert last.checkpoint is None and last.fine_tune_after_block == -1
            assert last.model_dir == str(tmp_path / cell.name / "supervised")
            continue
        pre, lin = runs
        assert pre.model_dir == str(tmp_path / cell.pretrain_name / "pretrain")
        assert lin.model_dir == str(tmp_path / cell.name / "linear")
        assert lin.checkpoint == pre.model_dir and lin.linear_eval
        for key, value in cell.linear.items():
            assert getattr(lin, key) == value
        # Every cell trains cell.length x the base run's examples, whatever its batch.
        examples = pre.train_steps * pre.train_batch_size
        assert examples == pytest.approx(base.train_steps * base.train_batch_size * cell.length,
                                         rel=0.5 / pre.train_steps)
        # ... with as many checkpoints (and evaluations) as the base run, within rounding.
        assert abs(-(-pre.train_steps // pre.checkpoint_steps) - 4) <= 1


def test_cells_can_be_chosen_and_bad_names_are_named():
    study = studies.get("color_strength", "supervised_s1, s0")
    assert [c.name for c in study.cells] == ["s0", "supervised_s1"]  # the study's order
    assert studies.get("loss").cells == studies.STUDIES["loss"].cells
    with pytest.raises(ValueError, match=r"--cells='s9': s9 not in --study=temperature; its "
                                         r"cells are t0.05, t0.1, t0.5, t1"):
        studies.get("temperature", "s9")


def test_the_projection_head_study_shares_each_pretraining():
    cells = {c.name: c for c in studies.STUDIES["projection_head"].cells}
    assert cells["linear_h"].pretrain_name == cells["linear_gh"].pretrain_name == "linear"
    assert cells["nonlinear_gh"].linear == {"ft_proj_selector": -1}
    assert cells["nonlinear_h"].linear == {"ft_proj_selector": 0}


def test_the_table_shows_each_cell_its_figures_and_the_papers():
    lines = ablation.table_lines(TINY_STUDY, {"a": {"top1": 0.51234, "knn_top1": 0.25},
                                              "b": {"top1": None, "knn_top1": 0.5}}, "how")
    rows = [line for line in lines if line.startswith("| temperature")]
    assert rows == ["| temperature 0.5 | `--temperature=0.5` | 51.2 | 25.0 | - |",
                    "| temperature 1 | `--temperature=1.0` | - | 50.0 | 42.0 |"]
    assert lines[2] == "how" and lines[-1] == "The paper: a test."
    assert ablation.table_lines(TINY_STUDY, {})[4].endswith("| - | - | - |")


def test_the_chart_grid_places_each_cell():
    study = studies.STUDIES["augmentation_pairs"]
    results = {"crop+color": {"top1": 0.5}, "rotate": {"top1": 0.1}}
    rows, cols, values = ablation_chart.grid(study, results)
    assert rows == cols == list(choices.AUGMENTATIONS)
    assert values[0, 2] == 50.0 and values[6, 6] == 10.0
    assert np.isnan(values).sum() == 47
    rows, cols, values = ablation_chart.grid(studies.STUDIES["batch_size"],
                                             {"b512_x2": {"top1": 0.25}})
    assert rows == ["1x epochs", "2x epochs"] and cols == ["32", "128", "512"]
    assert values[1, 2] == 25.0 and np.isnan(values).sum() == 5
    heads = studies.STUDIES["projection_head"]
    rows, cols, values = ablation_chart.grid(heads, {c.name: {"top1": i / 10} for i, c in
                                                     enumerate(heads.cells)})
    assert rows == ["none", "linear", "nonlinear"] and cols == ["h", "g(h)"]
    np.testing.assert_array_equal(values, [[0, np.nan], [10, 20], [30, 40]])


@pytest.mark.parametrize("name", ["augmentation_pairs", "color_strength", "loss"])
def test_the_chart_is_written_from_fixed_results(name, tmp_path):
    from PIL import Image  # noqa: PLC0415

    study = studies.STUDIES[name]
    results = {c.name: {"top1": (i % 7) / 10} for i, c in enumerate(study.cells)}
    path = ablation_chart.write_chart(study, results, str(tmp_path / "ablation.png"), "note")
    with Image.open(path) as image:
        width, height = image.size
        colours = len(set(image.convert("RGB").getdata()))
    assert width > 400 and height > 250 and colours > 20  # drawn, not blank
    assert os.listdir(tmp_path) == ["ablation.png"]  # no temporary file left


def test_a_tiny_study_runs_writes_its_table_and_resumes_without_training_again(
        tiny, tmp_path, monkeypatch, capsys):
    cfg = tiny(tmp_path / "study", train_steps=2, checkpoint_steps=2)
    results = ablation.run(TINY_STUDY, cfg, LINEAR)
    out = capsys.readouterr().out
    assert "ablate tiny 1/2: temperature 0.5" in out and "ablate tiny 2/2" in out
    for name in ("a", "b"):
        with open(tmp_path / "study" / name / "linear" / "summary.json") as f:
            linear = json.load(f)
        with open(tmp_path / "study" / name / "pretrain" / "summary.json") as f:
            pretrained = json.load(f)
        assert linear["global_step"] == 2 and pretrained["global_step"] == 2
        assert results[name] == {"top1": linear["top1"], "knn_top1": pretrained.get("knn_top1")}
    table = (tmp_path / "study" / "ablation.md").read_text()
    assert f"| temperature 0.5 | `--temperature=0.5` | {100 * results['a']['top1']:.1f} |" in table
    assert (tmp_path / "study" / "ablation.png").stat().st_size > 1000

    calls = []
    original = train.run
    monkeypatch.setattr(train, "run", lambda c, **kw: calls.append(c.model_dir)
                        or original(c, **kw))
    assert ablation.run(TINY_STUDY, cfg, LINEAR) == results
    assert calls == []  # both cells finished: nothing trained again
    os.remove(tmp_path / "study" / "b" / "linear" / "summary.json")  # cut short at the end
    again = ablation.run(TINY_STUDY, cfg, LINEAR)
    assert calls == [str(tmp_path / "study" / "b" / "linear")]  # only what was missing
    assert again["a"] == results["a"]
    # Resumed with other flags: refused before any work, naming each flag and both values;
    # a subset of its cells (--cells) is the same study.
    with pytest.raises(ValueError, match=r"holds --study=tiny begun with other flags "
                                         r"\(--linear_eval_steps=2 then, --linear_eval_steps=3 "
                                         r"now; --train_steps=2 then, --train_steps=4 now\)"):
        ablation.run(TINY_STUDY, dataclasses.replace(cfg, train_steps=4),
                     dataclasses.replace(LINEAR, steps=3))
    first = dataclasses.replace(TINY_STUDY, cells=TINY_STUDY.cells[:1])
    assert ablation.run(first, cfg, LINEAR) == {"a": results["a"]}
    assert len(calls) == 1


def test_the_program_names_an_unknown_study(tmp_path):
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    proc = subprocess.run([sys.executable, "-m", "simclr_tf.cli.ablate", "--study=colour",
                           f"--model_dir={tmp_path}"], capture_output=True, text=True,
                          timeout=300)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "--study='colour' is not a study" in last, last
    assert "color_strength, augmentation_pairs, projection_head, temperature, loss" in last
