"""The chart of a study (``DIR/ablation.png``), drawn from its per-cell results.

No TensorFlow here: matplotlib's Agg backend draws into a file. The form follows the
paper's figure for the study: bars of our top-1 beside the paper's figure (``bars``), bars
of each row of cells across the columns with the paper's figures as black marks
(``grouped``: the colour strengths of table 1 for SimCLR and supervised, the projection
heads of figure 8 on h and g(h), the batch sizes of figure 9 at each length), or the 7 x 7
heat map of figure 5 with its row averages (``heatmap``).
"""

import os
import warnings
from typing import Dict, List, Optional

import matplotlib

matplotlib.use("Agg")  # files only: works without a display (servers, CI, Colab)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from simclr_tf.tools import ablation_studies as studies  # noqa: E402


def _pct(results: Dict[str, Dict], cell: studies.Cell) -> float:
    value = results.get(cell.name, {}).get("top1")
    return np.nan if value is None else 100.0 * value


def _ordered(values) -> List[str]:
    return list(dict.fromkeys(v for v in values if v is not None))


def grid(study: studies.Study, results: Dict[str, Dict]):
    """(row labels, column labels, top-1 % [rows, cols], NaN where no cell or no result)."""
    rows = _ordered(c.row for c in study.cells)
    cols = _ordered(c.col for c in study.cells)
    values = np.full((len(rows), len(cols)), np.nan)
    for cell in study.cells:
        if cell.row is not None or cell.col is not None:
            r = rows.index(cell.row) if cell.row is not None else 0
            values[r, cols.index(cell.col)] = _pct(results, cell)
    return rows or [""], cols, values


def _bars(axis, study, results):
    x = np.arange(len(study.cells))
    ours = [_pct(results, c) for c in study.cells]
    paper = [np.nan if c.paper is None else c.paper for c in study.cells]
    axis.bar(x - 0.2, ours, 0.4, label="ours")
    axis.bar(x + 0.2, paper, 0.4, label="paper (ImageNet)", color="lightgray")
    axis.set_xticks(x, [c.label for c in study.cells], rotation=30, ha="right", fontsize=8)
    axis.legend(fontsize=8)


def _grouped(axis, study, results):
    rows, cols, values = grid(study, results)
    x = np.arange(len(cols))
    width = 0.8 / len(rows)
    offset = {row: (r - (len(rows) - 1) / 2) * width for r, row in enumerate(rows)}
    for r, row in enumerate(rows):
        axis.bar(x + offset[row], values[r], width, label=row or "ours")
    papers = [(cols.index(c.col) + offset[c.row or rows[0]], c.paper) for c in study.cells
              if c.paper is not None and c.col is not None]
    if papers:
        axis.scatter(*zip(*papers), marker="_", s=400, color="black", zorder=3,
                     label="paper (ImageNet)")
    axis.set_xticks(x, cols, fontsize=8)
    axis.legend(fontsize=8)


def _heatmap(figure, axis, study, results):
    rows, cols, values = grid(study, results)
    with warnings.catch_warnings():  # a row without results averages to NaN, quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        average = np.nanmean(values, axis=1, keepdims=True)
    shown = np.concatenate([values, average], axis=1)
    image = axis.imshow(shown, cmap="Greens")
    for (r, c), value in np.ndenumerate(shown):
        if not np.isnan(value):
            axis.text(c, r, f"{value:.1f}", ha="center", va="center", fontsize=7)
    axis.set_xticks(range(len(cols) + 1), cols + ["average"], rotation=30, ha="right")
    axis.set_yticks(range(len(rows)), rows)
    axis.set_xlabel("2nd transformation")
    axis.set_ylabel("1st transformation")
    figure.colorbar(image, ax=axis, label="top-1 (%)")


def write_chart(study: studies.Study, results: Dict[str, Dict], path: str,
                subtitle: Optional[str] = None) -> str:
    """The study's chart into ``path`` (a PNG written beside it and renamed into place)."""
    heatmap = study.chart == "heatmap"
    figure, axis = plt.subplots(figsize=(7.5, 6.0) if heatmap else (7.5, 4.0))
    if heatmap:
        _heatmap(figure, axis, study, results)
    else:
        (_grouped if study.chart == "grouped" else _bars)(axis, study, results)
        axis.set_ylabel("top-1 (%)")
    title = study.title + (f"\n{subtitle}" if subtitle else "")
    if heatmap:  # over the map and its colour bar, which an axis title would run under
        figure.suptitle(title, fontsize=9)
    else:
        axis.set_title(title, fontsize=9)
    tmp = path + ".tmp.png"
    figure.savefig(tmp, dpi=100, bbox_inches="tight", facecolor="white")
    plt.close(figure)
    os.replace(tmp, path)
    return path
