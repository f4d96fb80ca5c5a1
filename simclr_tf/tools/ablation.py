"""``simclr-ablate``: one of the paper's studies as a set of ordinary runs, and its table.

A study is a list of cells, each a setting of the run's flags. Every cell is pretrained into
``DIR/<cell>/pretrain`` and linear-evaluated (the paper's protocol, as ``make demo`` does it)
into ``DIR/<cell>/linear``; each is an ordinary run folder with its flags.txt, so an
interrupted study resumes: a cell whose linear evaluation wrote its summary.json is done and
never re-run, and a cell cut short continues from its newest checkpoint. ``DIR/ablation.md``
puts each cell's linear-evaluation top-1 and the kNN top-1 of its pretrained encoder beside
the paper's figure for that cell, where the paper gives one, and the direction it reports.
"""

import dataclasses
import json
import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from simclr_tf.core import config as config_lib
from simclr_tf.tools import demo
from simclr_tf.training import train


@dataclasses.dataclass(frozen=True)
class Cell:
    """One setting of a study: its folder name, its label in the table, the flags it sets on
    top of the run's, and the paper's linear-evaluation top-1 (%) for it, where given."""

    name: str
    label: str
    overrides: Dict[str, object]
    paper: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class Study:
    name: str
    title: str
    cells: Sequence[Cell]
    finding: str  # the direction the paper reports, and where


def _colour(name: str, label: str, strength: float, blur: bool, paper: Optional[float]):
    return Cell(name, label, {"color_jitter_strength": strength, "use_blur": blur}, paper)


STUDIES = {
    "color_strength": Study(
        "color_strength", "Colour distortion strength (linear evaluation)",
        (_colour("s0", "strength 0 (no colour distortion)", 0.0, False, None),
         _colour("s1_8", "strength 1/8", 0.125, False, 59.6),
         _colour("s1_4", "strength 1/4", 0.25, False, 61.0),
         _colour("s1_2", "strength 1/2", 0.5, False, 62.6),
         _colour("s1", "strength 1", 1.0, False, 63.2),
         _colour("s1_blur", "strength 1 + blur", 1.0, True, 64.5)),
        "stronger colour distortion helps contrastive learning: 59.6 -> 64.5 from strength "
        "1/8 to 1 + blur (the paper's table 1, ResNet-50 on ImageNet)"),
    "temperature": Study(
        "temperature", "NT-Xent temperature (linear evaluation)",
        tuple(Cell(f"t{t:g}", f"temperature {t:g}", {"temperature": t})
              for t in (0.05, 0.1, 0.5, 1.0)),
        "the paper's chosen temperatures are 0.1 (ImageNet, batch 4096) and 0.5 (CIFAR-10); "
        "too low or too high a temperature costs accuracy"),
}


@dataclasses.dataclass
class LinearSettings:
    """The linear evaluation of every cell (``make demo``'s protocol)."""

    steps: int
    learning_rate: float
    batch_size: int


def cell_configs(cfg: config_lib.Config, cell: Cell, linear: LinearSettings, root: str):
    """(pretraining config, linear-evaluation config) of ``cell`` under ``root``."""
    pre = dataclasses.replace(cfg, model_dir=os.path.join(root, cell.name, "pretrain"),
                              **cell.overrides).validate()
    lin = demo.linear_eval_config(pre, os.path.join(root, cell.name, "linear"),
                                  pre.model_dir, linear.steps, linear.learning_rate,
                                  linear.batch_size)
    return pre, lin.validate()


def _summary(model_dir: str) -> Optional[Dict]:
    path = os.path.join(model_dir, train.SUMMARY_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def run_cell(cfg: config_lib.Config, cell: Cell, linear: LinearSettings, root: str,
             before_run: Optional[Callable[[config_lib.Config], None]] = None
             ) -> Tuple[Dict, bool]:
    """Pretrains and linear-evaluates ``cell`` (what is done already is not run again);
    returns its figures, ``top1`` (linear evaluation) and ``knn_top1`` (pretraining), and
    whether it trained."""
    pre, lin = cell_configs(cfg, cell, linear, root)
    done = _summary(lin.model_dir)
    trained = done is None
    if trained:
        for run_cfg in (pre, lin):
            if _summary(run_cfg.model_dir) is None:  # not finished: start or resume it
                os.makedirs(run_cfg.model_dir, exist_ok=True)
                if before_run:
                    before_run(run_cfg)
                train.run(run_cfg)
        done = _summary(lin.model_dir)
    pretrained = _summary(pre.model_dir) or {}
    return {"top1": done.get("top1"), "knn_top1": pretrained.get("knn_top1")}, trained


def run(study: Study, cfg: config_lib.Config, linear: LinearSettings,
        before_run: Optional[Callable[[config_lib.Config], None]] = None) -> Dict[str, Dict]:
    """Every cell of ``study`` under ``cfg.model_dir``, with a progress line per cell; writes
    and returns the results (by cell name) and ``ablation.md``."""
    root, results, start, ran = cfg.model_dir, {}, time.time(), 0
    for i, cell in enumerate(study.cells, 1):
        left = len(study.cells) - i + 1
        eta = ((time.time() - start) / ran * left) if ran else None
        print(f"ablate {study.name} {i}/{len(study.cells)}: {cell.label} | elapsed "
              f"{_clock(time.time() - start)} | ETA {_clock(eta) if eta is not None else '-'}",
              flush=True)
        results[cell.name], trained = run_cell(cfg, cell, linear, root, before_run)
        ran += trained
    path = write_table(study, results, os.path.join(root, "ablation.md"))
    print(f"ablate {study.name}: wrote {path}", flush=True)
    return results


def table_lines(study: Study, results: Dict[str, Dict]) -> List[str]:
    """The Markdown table of ``results`` (by cell name; a missing cell shows "-")."""
    def pct(value):
        return "-" if value is None else f"{100 * value:.1f}"

    lines = [f"# {study.title}", "",
             "| cell | setting | linear top-1 (%) | kNN top-1 (%) | paper (%) |",
             "| --- | --- | --- | --- | --- |"]
    for cell in study.cells:
        got = results.get(cell.name, {})
        setting = ", ".join(f"--{k}={v}" for k, v in cell.overrides.items())
        paper = "-" if cell.paper is None else f"{cell.paper:.1f}"
        lines.append(f"| {cell.label} | `{setting}` | {pct(got.get('top1'))} | "
                     f"{pct(got.get('knn_top1'))} | {paper} |")
    return lines + ["", f"The paper: {study.finding}."]


def write_table(study: Study, results: Dict[str, Dict], path: str) -> str:
    """``table_lines`` into ``path``, written beside it and renamed into place."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(table_lines(study, results)) + "\n")
    os.replace(tmp, path)
    return path


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
