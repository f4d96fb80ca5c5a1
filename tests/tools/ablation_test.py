"""simclr-ablate: the studies' cells, the table from fixed results, and a tiny study end to
end with its resume (a finished cell is never trained again)."""

import json
import os


from simclr_tf.tools import ablation
from simclr_tf.training import train

LINEAR = ablation.LinearSettings(steps=2, learning_rate=0.2, batch_size=8)
TINY_STUDY = ablation.Study(
    "tiny", "Two temperatures", (ablation.Cell("a", "temperature 0.5", {"temperature": 0.5}),
                                 ablation.Cell("b", "temperature 1", {"temperature": 1.0}, 42.0)),
    "a test")


def test_the_colour_study_is_the_papers_table_1_and_its_cells_are_valid_runs(tiny, tmp_path):
    study = ablation.STUDIES["color_strength"]
    assert [c.overrides["color_jitter_strength"] for c in study.cells] == [
        0.0, 0.125, 0.25, 0.5, 1.0, 1.0]
    assert [c.overrides["use_blur"] for c in study.cells] == [False] * 5 + [True]
    assert [c.paper for c in study.cells] == [None, 59.6, 61.0, 62.6, 63.2, 64.5]
    assert [c.overrides["temperature"] for c in ablation.STUDIES["temperature"].cells] == [
        0.05, 0.1, 0.5, 1.0]
    for name, study in ablation.STUDIES.items():
        assert len({c.name for c in study.cells}) == len(study.cells), name
        for cell in study.cells:  # every cell makes a valid pair of runs in its own folders
            pre, lin = ablation.cell_configs(tiny(tmp_path), cell, LINEAR, str(tmp_path))
            assert pre.model_dir == str(tmp_path / cell.name / "pretrain")
            assert lin.checkpoint == pre.model_dir and lin.linear_eval
            for key, value in cell.overrides.items():
                assert getattr(pre, key) == getattr(lin, key) == value


def test_the_table_shows_each_cell_its_figures_and_the_papers():
    lines = ablation.table_lines(TINY_STUDY, {"a": {"top1": 0.51234, "knn_top1": 0.25},
                                              "b": {"top1": None, "knn_top1": 0.5}})
    rows = [line for line in lines if line.startswith("| temperature")]
    assert rows == ["| temperature 0.5 | `--temperature=0.5` | 51.2 | 25.0 | - |",
                    "| temperature 1 | `--temperature=1.0` | - | 50.0 | 42.0 |"]
    assert lines[-1] == "The paper: a test."
    assert ablation.table_lines(TINY_STUDY, {})[4].endswith("| - | - | - |")


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


def test_the_program_names_an_unknown_study(tmp_path):
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    proc = subprocess.run([sys.executable, "-m", "simclr_tf.cli.ablate", "--study=colour",
                           f"--model_dir={tmp_path}"], capture_output=True, text=True,
                          timeout=300)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "--study='colour' is not a study" in last, last
    assert "color_strength, temperature" in last
