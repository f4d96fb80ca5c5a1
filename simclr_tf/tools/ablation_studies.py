"""The studies of ``simclr-ablate``: the paper's ablations as lists of cells (flag settings),
each with the paper's figure where it gives one per cell, and the direction it reports.

The paper's figures are ResNet-50 on ImageNet, linear evaluation top-1 (%), 100 epochs at
batch 4096 unless said: table 1 (colour strength, and the supervised contrast), table 5
(temperature, with the L2 norm), table 4 (losses), figure 5 (augmentation pairs), figure 8
(projection head) and figure 9 (batch size x epochs).
"""

import dataclasses
import itertools
from typing import Dict, Optional, Sequence, Tuple

from simclr_tf.core import choices, parts


@dataclasses.dataclass(frozen=True)
class Cell:
    """One setting of a study.

    ``name`` is its folder, ``label`` its row in the table, ``overrides`` the flags it sets on
    top of the run's, ``paper`` the paper's top-1 (%) where given. Cells naming the same
    ``pretrain`` folder share one pretraining run (the projection-head study evaluates one
    encoder on h and on g(h)); ``linear`` are flags of its linear evaluation. A
    ``supervised`` cell trains the same network from random initialisation on the labels,
    with the cell's augmentations, instead of pretraining + linear evaluation. ``length``
    scales the pretraining's examples (steps x batch) relative to the run's. ``row`` and
    ``col`` place the cell in a chart's grid.
    """

    name: str
    label: str
    overrides: Dict[str, object]
    paper: Optional[float] = None
    pretrain: Optional[str] = None
    linear: Dict[str, object] = dataclasses.field(default_factory=dict)
    supervised: bool = False
    length: float = 1.0
    row: Optional[str] = None
    col: Optional[str] = None

    @property
    def pretrain_name(self) -> str:
        return self.pretrain or self.name


@dataclasses.dataclass(frozen=True)
class Study:
    name: str
    title: str
    cells: Sequence[Cell]
    finding: str  # the direction the paper reports, and where
    chart: str = "bars"  # bars, heatmap (row x col) or grouped (bars of each row by col)


STRENGTHS: Tuple[Tuple[str, str, float, bool, Optional[float]], ...] = (
    ("s1_8", "1/8", 0.125, False, 59.6), ("s1_4", "1/4", 0.25, False, 61.0),
    ("s1_2", "1/2", 0.5, False, 62.6), ("s1", "1", 1.0, False, 63.2),
    ("s1_blur", "1 + blur", 1.0, True, 64.5))
# Table 1's supervised row at the two ends (77.0 at 1/8, 75.4 at 1 + blur).
SUPERVISED_PAPER = {"s1_8": 77.0, "s1_blur": 75.4}


def _colour_cells():
    cells = [Cell("s0", "strength 0 (no colour distortion)",
                  {"color_jitter_strength": 0.0, "use_blur": False}, row="SimCLR", col="0")]
    for name, label, strength, blur, paper in STRENGTHS:
        cells.append(Cell(name, f"strength {label}",
                          {"color_jitter_strength": strength, "use_blur": blur}, paper,
                          row="SimCLR", col=label))
    for name, label, strength, blur, _ in STRENGTHS:
        augmentations = "crop,color,blur" if blur else "crop,color"
        cells.append(Cell(f"supervised_{name}", f"supervised, strength {label}",
                          {"color_jitter_strength": strength, "augmentations": augmentations},
                          SUPERVISED_PAPER.get(name), supervised=True, row="supervised",
                          col=label))
    return tuple(cells)


def _pair_cells():
    cells = []
    for first, second in itertools.product(choices.AUGMENTATIONS, repeat=2):
        names = (first,) if first == second else (first, second)
        cells.append(Cell("+".join(names), " then ".join(names),
                          {"augmentations": ",".join(names), "augment_one_view": True},
                          row=first, col=second))
    return tuple(cells)


def _head_cells():
    cells = [Cell("none", "no projection (h)", {"proj_head_mode": "none"}, row="none",
                  col="h")]
    for mode in ("linear", "nonlinear"):
        for tap, selector in (("h", 0), ("g(h)", -1)):
            cells.append(Cell(f"{mode}_{'h' if selector == 0 else 'gh'}",
                              f"{mode} head, evaluated on {tap}", {"proj_head_mode": mode},
                              pretrain=mode, linear={"ft_proj_selector": selector},
                              row=mode, col=tap))
    return tuple(cells)


def _loss_cells():
    papers = {("nt_xent", False): 63.9, ("nt_logistic", False): 51.6,
              ("margin_triplet", False): 50.9, ("nt_logistic", True): 57.9,
              ("margin_triplet", True): 57.5}
    cells = [Cell(f"{loss}{'_sh' if sh else ''}", f"{loss}{' (semi-hard)' if sh else ''}",
                  {"loss": loss, "semi_hard_negatives": sh}, paper)
             for (loss, sh), paper in papers.items()]
    # Every other loss of simclr_tf/losses (e.g. supcon) is a cell too, with no paper figure.
    return tuple(cells + [Cell(loss, loss, {"loss": loss, "semi_hard_negatives": False})
                          for loss in parts.built_in("loss") if (loss, False) not in papers])


def _batch_cells(batches=(32, 128, 512), lengths=(1, 2)):
    return tuple(
        Cell(f"b{batch}_x{length}", f"batch {batch}, {length}x the run's epochs",
             {"train_batch_size": batch}, length=length, row=f"{length}x epochs",
             col=str(batch))
        for length in lengths for batch in batches)


STUDIES = {
    "color_strength": Study(
        "color_strength", "Colour distortion strength (linear evaluation; supervised from "
        "scratch for contrast)", _colour_cells(),
        "stronger colour distortion helps contrastive learning (59.6 -> 64.5 from strength "
        "1/8 to 1 + blur) and does not help supervised learning (77.0 -> 75.4); table 1",
        chart="grouped"),
    "augmentation_pairs": Study(
        "augmentation_pairs", "Augmentations alone and in pairs (one view transformed; linear "
        "evaluation)", _pair_cells(),
        "no single transformation suffices, composing two helps, and random crop with colour "
        "distortion is by far the best pair (figure 5, asymmetric setting as here)",
        chart="heatmap"),
    "projection_head": Study(
        "projection_head", "Projection head, and the layer evaluated (linear evaluation)",
        _head_cells(),
        "a non-linear head beats a linear one (about +3) which beats none (over +10 for the "
        "non-linear head), and h, before the head, is a better representation than g(h); "
        "figure 8", chart="grouped"),
    "temperature": Study(
        "temperature", "NT-Xent temperature (linear evaluation)",
        tuple(Cell(f"t{t:g}", f"temperature {t:g}", {"temperature": t}, paper)
              for t, paper in ((0.05, 59.7), (0.1, 64.4), (0.5, 60.7), (1.0, 58.0))),
        "0.1 is best at batch 4096 (table 5: 59.7 / 64.4 / 60.7 / 58.0); CIFAR-10's best is "
        "0.5"),
    "loss": Study(
        "loss", "Contrastive loss (linear evaluation)", _loss_cells(),
        "NT-Xent beats NT-Logistic and the margin triplet loss, which semi-hard negatives "
        "help (table 4; the paper tuned each loss's settings, ours are stated in "
        "docs/ablations.md)"),
    "batch_size": Study(
        "batch_size", "Batch size x training length (linear evaluation)", _batch_cells(),
        "bigger batches help, most with short training; the gap closes as training grows "
        "longer (figure 9)", chart="grouped"),
}


def get(name: str, cells: str = "") -> Study:
    """The study ``name``, or an error naming the studies there are; ``cells`` (names,
    comma-separated) keeps only those cells, in the study's order."""
    if name not in STUDIES:
        raise ValueError(f"--study={name!r} is not a study; use one of "
                         f"{', '.join(STUDIES)}.")
    study = STUDIES[name]
    wanted = [c.strip() for c in cells.split(",") if c.strip()]
    if not wanted:
        return study
    names = [c.name for c in study.cells]
    unknown = [c for c in wanted if c not in names]
    if unknown:
        raise ValueError(f"--cells={cells!r}: {', '.join(unknown)} not in --study={name}; its "
                         f"cells are {', '.join(names)}.")
    return dataclasses.replace(study, cells=tuple(c for c in study.cells if c.name in wanted))
