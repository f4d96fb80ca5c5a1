"""The pictures of ``simclr-visualize``, drawn from NumPy arrays into PNG files.

No TensorFlow here and no display: matplotlib's Agg backend draws into files. Each function
takes what it shows (images in [0, 1], features, labels, scalar series) and writes one PNG;
``visualize.py`` gets those from a run or an export.
"""

from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")  # files only: works without a display (servers, CI, Colab)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

METHODS = ("auto", "umap", "tsne", "pca")


def _save(figure, path: str) -> str:
    figure.savefig(path, dpi=100, bbox_inches="tight", facecolor="white")
    plt.close(figure)
    return path


def _show(axis, image: np.ndarray, title: str = ""):
    axis.imshow(np.clip(image, 0.0, 1.0), interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])
    if title:
        axis.set_title(title, fontsize=8)


def views_png(path: str, originals: np.ndarray, views: np.ndarray, caption: str) -> str:
    """Each original [n, H, W, 3] beside ``pairs`` pairs of its views [n, pairs, 2, S, S, 3]."""
    n, pairs = views.shape[:2]
    figure, axes = plt.subplots(n, 1 + 2 * pairs, figsize=(1.3 * (1 + 2 * pairs), 1.4 * n),
                                squeeze=False)
    for i in range(n):
        _show(axes[i, 0], originals[i], "original" if i == 0 else "")
        for p in range(pairs):
            for v in range(2):
                title = f"pair {p + 1}, view {v + 1}" if i == 0 else ""
                _show(axes[i, 1 + 2 * p + v], views[i, p, v], title)
    figure.suptitle(caption, fontsize=9)
    return _save(figure, path)


def project_2d(features: np.ndarray, method: str = "auto", seed: int = 0
               ) -> Tuple[np.ndarray, str]:
    """Features [n, d] in 2-D, and the method used: ``umap`` (when umap-learn is installed),
    ``tsne`` (scikit-learn's), or ``pca``; ``auto`` takes the first available in that order."""
    if method not in METHODS:
        raise ValueError(f"--embedding_method={method!r}: use one of {list(METHODS)}.")
    features = np.asarray(features, np.float64)
    if method in ("auto", "umap"):
        try:
            import umap  # noqa: PLC0415 (optional)

            return umap.UMAP(random_state=seed).fit_transform(features), "umap"
        except ImportError:
            if method == "umap":
                raise ValueError("--embedding_method=umap needs umap-learn (pip install "
                                 "umap-learn); use tsne or pca.") from None
    if method in ("auto", "tsne") and len(features) > 5:
        try:
            from sklearn.manifold import TSNE  # noqa: PLC0415 (optional)

            perplexity = min(30.0, (len(features) - 1) / 3.0)
            return TSNE(2, perplexity=perplexity, init="pca", random_state=seed
                        ).fit_transform(features), "tsne"
        except ImportError:
            if method == "tsne":
                raise ValueError("--embedding_method=tsne needs scikit-learn (pip install "
                                 "scikit-learn); use pca.") from None
    centred = features - features.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:2].T, "pca"


def _colours(num_classes: int):
    return plt.get_cmap("tab10" if num_classes <= 10 else "tab20")(
        np.arange(num_classes) % (10 if num_classes <= 10 else 20))


def embedding_png(path: str, points: np.ndarray, labels: np.ndarray,
                  class_names: Sequence[str], caption: str) -> str:
    """A 2-D scatter of ``points`` [n, 2], one colour per class, with a legend."""
    figure, axis = plt.subplots(figsize=(7, 6))
    colours = _colours(len(class_names))
    for c, name in enumerate(class_names):
        mine = labels == c
        if mine.any():
            axis.scatter(points[mine, 0], points[mine, 1], s=8, color=colours[c], label=name)
    axis.set_xticks([])
    axis.set_yticks([])
    axis.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    axis.set_title(caption, fontsize=9)
    return _save(figure, path)


def retrieval_png(path: str, queries: np.ndarray, query_labels: np.ndarray,
                  neighbours: np.ndarray, neighbour_labels: np.ndarray,
                  similarities: np.ndarray, class_names: Sequence[str], caption: str) -> str:
    """Each query [q, H, W, 3] and its nearest images [q, k, H, W, 3], titled with their
    class and cosine similarity (a neighbour of another class in red)."""
    q, k = neighbours.shape[:2]
    figure, axes = plt.subplots(q, 1 + k, figsize=(1.3 * (1 + k), 1.5 * q), squeeze=False)
    for i in range(q):
        _show(axes[i, 0], queries[i], f"query: {class_names[query_labels[i]]}")
        for j in range(k):
            same = neighbour_labels[i, j] == query_labels[i]
            _show(axes[i, 1 + j], neighbours[i, j],
                  f"{class_names[neighbour_labels[i, j]]} {similarities[i, j]:.2f}")
            axes[i, 1 + j].title.set_color("black" if same else "red")
    figure.suptitle(caption, fontsize=9)
    return _save(figure, path)


def curves_png(path: str, runs: Dict[str, Dict[str, Dict[int, float]]], caption: str,
               order: Optional[List[str]] = None) -> str:
    """One panel per scalar series ``{run label: {name: {step: value}}}`` (names in
    ``order`` first); the runs' curves of a name share its panel, with a legend when there
    are several runs."""
    present = set().union(*(series.keys() for series in runs.values())) if runs else set()
    names = [n for n in (order or []) if n in present] + sorted(
        n for n in present if n not in (order or []))
    if not names:
        raise ValueError("no training curves to draw: the run wrote no scalar summaries.")
    columns = min(3, len(names))
    rows = -(-len(names) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.8 * rows), squeeze=False)
    for axis, name in zip(axes.flat, names):
        for label, series in runs.items():
            if name not in series:
                continue
            steps = sorted(series[name])
            axis.plot(steps, [series[name][s] for s in steps], label=label,
                      marker="." if len(steps) < 30 else "")
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("step", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
        if len(runs) > 1:
            axis.legend(fontsize=6)
    for axis in list(axes.flat)[len(names):]:
        axis.axis("off")
    figure.suptitle(caption, fontsize=10)
    figure.tight_layout()
    return _save(figure, path)
