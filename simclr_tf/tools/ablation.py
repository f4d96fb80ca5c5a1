"""``simclr-ablate``: one of the paper's studies (``ablation_studies``) as a set of ordinary
runs, and its table and chart.

A study is a list of cells, each a setting of the run's flags. Every cell is pretrained into
``DIR/<cell>/pretrain`` and linear-evaluated (the paper's protocol, as ``make demo`` does it)
into ``DIR/<cell>/linear`` (a supervised cell instead trains from random initialisation into
``DIR/<cell>/supervised``); each is an ordinary run folder with its flags.txt, so an
interrupted study resumes: a run that wrote its summary.json is never run again, and a run
cut short continues from its newest checkpoint, and a study resumed with other flags is
refused (``ablation_record``: its first settings are kept in ``DIR/study.json``).
``DIR/ablation.md`` puts each cell's top-1
and the kNN top-1 of its pretrained encoder beside the paper's figure for that cell, where
the paper gives one, and the direction it reports; ``DIR/ablation.png`` draws them.
"""

import dataclasses
import json
import os
import time
from typing import Callable, Dict, List, Optional, Tuple

from simclr_tf.core import config as config_lib
from simclr_tf.runs import run_folder
from simclr_tf.tools import ablation_budget, ablation_chart, ablation_record, demo
from simclr_tf.tools import ablation_studies as studies
from simclr_tf.training import train


@dataclasses.dataclass
class LinearSettings:
    """The linear evaluation of every cell (``make demo``'s protocol)."""

    steps: int
    learning_rate: float
    batch_size: int


def cell_configs(cfg: config_lib.Config, cell: studies.Cell, linear: LinearSettings,
                 root: str) -> List[config_lib.Config]:
    """The runs of ``cell`` under ``root``, in order: its pretraining (in
    ``root/<cell.pretrain_name>/pretrain``, shared by the cells naming it) and its linear
    evaluation (``root/<cell>/linear``), or a supervised cell's one run from random
    initialisation (``root/<cell>/supervised``). The last run gives the cell's top-1."""
    pre = dataclasses.replace(cfg, model_dir=os.path.join(root, cell.pretrain_name, "pretrain"),
                              **cell.overrides)
    pre = dataclasses.replace(pre, **_length(cfg, pre, cell.length))
    if cell.supervised:
        return [dataclasses.replace(
            pre, train_mode="finetune", model_dir=os.path.join(root, cell.name, "supervised"),
            checkpoint=None, fine_tune_after_block=-1, linear_eval=False,
            lineareval_while_pretraining=False, knn_monitor=False).validate()]
    lin = demo.linear_eval_config(pre, os.path.join(root, cell.name, "linear"),
                                  pre.model_dir, linear.steps, linear.learning_rate,
                                  linear.batch_size)
    return [pre.validate(), dataclasses.replace(lin, **cell.linear).validate()]


def _length(base: config_lib.Config, cfg: config_lib.Config, length: float) -> Dict:
    """The duration of ``cfg`` that trains ``length`` x the examples of ``base`` (steps
    rescaled when the cell changes the batch), with as many checkpoints as ``base``."""
    if base.train_steps == 0:
        return {"train_epochs": base.train_epochs * length}
    examples = base.train_steps * base.train_batch_size * length
    steps = max(1, round(examples / cfg.train_batch_size))
    if not base.checkpoint_steps:
        return {"train_steps": steps}
    every = max(1, round(base.checkpoint_steps * steps / base.train_steps))
    return {"train_steps": steps, "checkpoint_steps": every}


def _summary(model_dir: str) -> Optional[Dict]:
    path = os.path.join(model_dir, train.SUMMARY_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def run_cell(cfg: config_lib.Config, cell: studies.Cell, linear: LinearSettings, root: str,
             before_run: Optional[Callable[[config_lib.Config], None]] = None
             ) -> Tuple[Dict, bool]:
    """Trains the runs of ``cell`` that have not finished (a cut-short run resumes); returns
    its figures, ``top1`` (its last run) and ``knn_top1`` (its pretraining), and whether it
    trained."""
    runs = cell_configs(cfg, cell, linear, root)
    trained = False
    for run_cfg in runs:
        if _summary(run_cfg.model_dir) is None:  # not finished: start or resume it
            demo.prepare(run_cfg, before_run)
            train.run(run_cfg)
            trained = True
    pretrained = {} if cell.supervised else _summary(runs[0].model_dir)
    return {"top1": _summary(runs[-1].model_dir).get("top1"),
            "knn_top1": pretrained.get("knn_top1")}, trained


def run(study: studies.Study, cfg: config_lib.Config, linear: LinearSettings,
        before_run: Optional[Callable[[config_lib.Config], None]] = None,
        budget_minutes: Optional[float] = None) -> Dict[str, Dict]:
    """Every cell of ``study`` under ``cfg.model_dir``, with a progress line per cell (its
    place, the time spent and left); writes ``ablation.md`` and ``ablation.png`` and returns
    the results by cell name. ``budget_minutes`` sizes the pretraining runs
    (``ablation_budget``) instead of ``cfg``'s length."""
    root, results, start, ran = cfg.model_dir, {}, time.time(), 0
    if budget_minutes:
        ablation_budget.check_minutes(budget_minutes)
    # Before any work: a resumed study keeps its first settings. They are kept once the
    # length is fixed (a budget refused as too short keeps nothing).
    record = ablation_record.settings(study.name, cfg, linear, budget_minutes)
    ablation_record.check(root, record)
    run_folder.output_folder(root, "model_dir")
    if budget_minutes:
        cfg = ablation_budget.sized(study, cfg, linear, budget_minutes, before_run)
    ablation_record.keep(root, record)
    cells_start = time.time()  # the ETA is of the cells alone, without the probe
    for i, cell in enumerate(study.cells, 1):
        left = len(study.cells) - i + 1
        eta = ((time.time() - cells_start) / ran * left) if ran else None
        print(f"ablate {study.name} {i}/{len(study.cells)}: {cell.label} | elapsed "
              f"{_clock(time.time() - start)} | ETA {_clock(eta) if eta is not None else '-'}",
              flush=True)
        results[cell.name], trained = run_cell(cfg, cell, linear, root, before_run)
        ran += trained
    note = _length_note(cfg, linear, budget_minutes)
    table = write_table(study, results, os.path.join(root, "ablation.md"), note)
    chart = ablation_chart.write_chart(study, results, os.path.join(root, "ablation.png"),
                                       note)
    print(f"ablate {study.name}: wrote {table} and {chart} in "
          f"{_clock(time.time() - start)}", flush=True)
    return results


def _length_note(cfg: config_lib.Config, linear: LinearSettings,
                 budget_minutes: Optional[float]) -> str:
    length = (f"{cfg.train_steps} steps" if cfg.train_steps
              else f"{cfg.train_epochs:g} epochs")
    sized = f" (sized by --budget_minutes={budget_minutes:g})" if budget_minutes else ""
    return (f"{cfg.dataset}, {cfg.image_size} px: pretraining {length} at batch "
            f"{cfg.train_batch_size}{sized}; linear evaluation {linear.steps} steps")


def table_lines(study: studies.Study, results: Dict[str, Dict], note: str = "") -> List[str]:
    """The Markdown table of ``results`` (by cell name; a missing cell shows "-"), under
    ``note`` (how the cells were run)."""
    def pct(value):
        return "-" if value is None else f"{100 * value:.1f}"

    lines = [f"# {study.title}", ""] + ([note, ""] if note else []) + [
             "| cell | setting | top-1 (%) | kNN top-1 (%) | paper (%) |",
             "| --- | --- | --- | --- | --- |"]
    for cell in study.cells:
        got = results.get(cell.name, {})
        setting = _setting(cell)
        paper = "-" if cell.paper is None else f"{cell.paper:.1f}"
        lines.append(f"| {cell.label} | `{setting}` | {pct(got.get('top1'))} | "
                     f"{pct(got.get('knn_top1'))} | {paper} |")
    return lines + ["", "top-1: the linear evaluation of the pretrained encoder, or a "
                    "supervised cell's own; kNN: the pretrained encoder's monitor.", "",
                    f"The paper: {study.finding}."]


def _setting(cell: studies.Cell) -> str:
    flags = [f"--{k}={v}" for k, v in cell.overrides.items()]
    if cell.length != 1:
        flags.append(f"{cell.length:g}x the examples")
    flags += [f"linear eval --{k}={v}" for k, v in cell.linear.items()]
    return ", ".join(flags)


def write_table(study: studies.Study, results: Dict[str, Dict], path: str,
                note: str = "") -> str:
    """``table_lines`` into ``path``, written beside it and renamed into place."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(table_lines(study, results, note)) + "\n")
    os.replace(tmp, path)
    return path


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
