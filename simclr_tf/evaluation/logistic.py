"""L2-regularised logistic regression on fixed features: the transfer protocol's classifier.

The SimCLR paper (appendix B.8, after Kornblith et al. 2019) trains an L2-regularised
multinomial logistic regression on frozen features with L-BFGS, choosing the regulariser from
45 log-spaced values between 1e-6 and 1e5 on a validation split. Here, for features X [n, d]
and labels y, with W [d, K] and an unpenalised bias b [K]:

    multinomial:  (1/n) sum_i -log softmax(x_i W + b)[y_i]                 + (l2 / 2) |W|^2
    multi-label:  (1/n) sum_i sum_k BCE(sigmoid(x_i W + b)[k], t_ik)        + (l2 / 2) |W|^2

minimised by scipy's L-BFGS in float64 with the exact gradient. The multi-label form (one
binary problem per class) is for VOC2007, whose images hold several classes. The metrics:
top-1 accuracy, mean per-class accuracy, and VOC's 11-point mean average precision.
"""

import dataclasses
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
from scipy import optimize


def l2_grid(size: int = 45, low: float = 1e-6, high: float = 1e5) -> np.ndarray:
    """``size`` log-spaced regularisation strengths from ``high`` down to ``low``."""
    return np.logspace(np.log10(high), np.log10(low), size)


@dataclasses.dataclass
class Linear:
    """A fitted linear classifier: ``scores(x) = x W + b``."""

    weights: np.ndarray  # [d, K]
    bias: np.ndarray  # [K]
    multilabel: bool = False

    def scores(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(features, np.float64) @ self.weights + self.bias

    @property
    def params(self) -> np.ndarray:
        return np.concatenate([self.weights.ravel(), self.bias])


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _objective(params, x, targets, l2, multilabel) -> Tuple[float, np.ndarray]:
    """The loss and its gradient at ``params`` (W flattened, then b)."""
    n, d = x.shape
    k = targets.shape[1]
    w, b = params[:d * k].reshape(d, k), params[d * k:]
    z = x @ w + b
    if multilabel:
        # BCE with logits: log(1 + e^z) - t z, computed stably; its gradient sigmoid(z) - t.
        loss = np.sum(np.logaddexp(0.0, z) - targets * z) / n
        residual = (1.0 / (1.0 + np.exp(-z)) - targets) / n
    else:
        log_p = _log_softmax(z)
        loss = -np.sum(targets * log_p) / n
        residual = (np.exp(log_p) - targets) / n
    loss += 0.5 * l2 * np.sum(w * w)
    grad_w = x.T @ residual + l2 * w
    return loss, np.concatenate([grad_w.ravel(), residual.sum(axis=0)])


def targets_of(labels: np.ndarray, num_classes: int, multilabel: bool) -> np.ndarray:
    """One-hot rows of class indices, or (multi-label) the 0/1 rows as given (-1, "ignore
    in evaluation", counts as 1 in training: the class is there)."""
    if multilabel:
        return (np.asarray(labels) != 0).astype(np.float64)
    return np.eye(num_classes, dtype=np.float64)[np.asarray(labels, np.int64)]


def fit(features: np.ndarray, labels: np.ndarray, l2: float, num_classes: int,
        multilabel: bool = False, init: Optional[Linear] = None,
        max_iter: int = 1000, tol: float = 1e-10) -> Linear:
    """The minimiser of the objective above for one ``l2`` (``init``: a warm start)."""
    x = np.asarray(features, np.float64)
    targets = targets_of(labels, num_classes, multilabel)
    d = x.shape[1]
    start = init.params if init is not None else np.zeros(d * num_classes + num_classes)
    result = optimize.minimize(_objective, start, args=(x, targets, l2, multilabel),
                               jac=True, method="L-BFGS-B",
                               options={"maxiter": max_iter, "ftol": tol, "gtol": 1e-8})
    w = result.x[:d * num_classes].reshape(d, num_classes)
    return Linear(w, result.x[d * num_classes:], multilabel)


def top1_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(scores, axis=1) == labels))


def mean_per_class_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """The mean over the classes present in ``labels`` of each one's top-1 accuracy."""
    hits = np.argmax(scores, axis=1) == labels
    return float(np.mean([hits[labels == c].mean() for c in np.unique(labels)]))


def average_precision_11(scores: np.ndarray, targets: np.ndarray) -> float:
    """VOC2007's 11-point interpolated AP of one class: the mean over recall thresholds 0,
    0.1, ..., 1 of the best precision at a recall at least that. ``targets``: 1 positive, 0
    negative, -1 ignored (VOC's "difficult" only)."""
    keep = targets >= 0
    scores, positive = scores[keep], targets[keep] == 1
    if not positive.any():
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = positive[order]
    true_pos = np.cumsum(hits)
    recall = true_pos / positive.sum()
    precision = true_pos / np.arange(1, len(hits) + 1)
    return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                          for t in np.linspace(0, 1, 11)]))


def voc_map_11(scores: np.ndarray, targets: np.ndarray) -> float:
    """The mean over classes (with a positive) of ``average_precision_11``."""
    aps = [average_precision_11(scores[:, k], targets[:, k]) for k in range(scores.shape[1])]
    return float(np.nanmean(aps))


METRICS: Dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "top1": top1_accuracy,
    "mean_per_class": mean_per_class_accuracy,
    "map_11": voc_map_11,
}


def choose_l2(train: Tuple[np.ndarray, np.ndarray], val: Tuple[np.ndarray, np.ndarray],
              grid: Sequence[float], num_classes: int, metric: str,
              multilabel: bool = False) -> Tuple[float, Dict[float, float]]:
    """The strength of ``grid`` whose classifier, fitted on ``train``, scores best on ``val``
    by ``metric`` (the strongest of equals), and every strength's score. Each fit starts
    from the previous (stronger) one's solution."""
    scored, previous = {}, None
    for l2 in sorted(grid, reverse=True):
        previous = fit(*train, l2, num_classes, multilabel, init=previous)
        scored[float(l2)] = METRICS[metric](previous.scores(val[0]), val[1])
    best = max(scored, key=lambda l2: (scored[l2], l2))
    return best, scored
