"""Label subsets of a training split, for semi-supervised fine-tuning on any labelled source.

Three ways to choose the labelled examples (at most one per run):
- ``fraction`` f: a seeded, class-balanced share, max(1, round(f * n_c)) of each class c;
- ``per_class`` k: a seeded min(k, n_c) of each class;
- ``name_file``: a text file of image names, one per line (the original's
  ``imagenet_subsets/1percent.txt`` lists ``n04235860_14959.JPEG``-style names); a name
  matches an image whose file name, or the end of whose path, it equals.
"""

import os
from typing import Dict

import numpy as np
import tensorflow as tf

# The settings (fraction, per_class, name_file, seed) and their checks live with the
# rest of a run's settings.
from simclr_tf.core.config import LabelSubset
from simclr_tf.data import sources


def balanced(labels: np.ndarray, fraction: float = 0.0, per_class: int = 0,
             seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded, class-balanced subset of ``labels`` [N]: of each class c
    with n_c examples, max(1, round(fraction * n_c)) or min(per_class, n_c)."""
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = min(per_class, len(members)) if per_class else max(
            1, int(round(fraction * len(members))))
        keep.append(members[rng.permutation(len(members))[:k]])
    return np.sort(np.concatenate(keep)) if keep else np.zeros([0], np.int64)


def read_names(path: str) -> set:
    """The names listed in ``path``: one per line; blank lines and ``#`` comments skipped."""
    if not tf.io.gfile.exists(path):
        raise ValueError(f"--train_label_file={path!r} does not exist; give a text file with "
                         "one image name per line.")
    with tf.io.gfile.GFile(path) as f:
        names = {line.strip() for line in f if line.strip() and not line.startswith("#")}
    if not names:
        raise ValueError(f"--train_label_file={path!r} lists no image names.")
    return names


def _suffixes(path: str):
    """``a/b/c.jpg`` -> ``a/b/c.jpg``, ``b/c.jpg``, ``c.jpg``."""
    parts = path.replace(os.sep, "/").split("/")
    return ("/".join(parts[i:]) for i in range(len(parts)))


def named(file_names: np.ndarray, names: set, path: str) -> np.ndarray:
    """Indices of the ``file_names`` listed in ``names``: a name matches a file name, or the
    end of a path (``cat/1.jpg`` matches ``train/cat/1.jpg``)."""
    decoded = [n.decode() if isinstance(n, bytes) else str(n) for n in file_names]
    keep = [i for i, n in enumerate(decoded) if any(s in names for s in _suffixes(n))]
    if not keep:
        raise ValueError(f"none of the {len(names)} names in --train_label_file={path!r} "
                         f"(e.g. {sorted(names)[:3]}) is an image of the training split (e.g. "
                         f"{decoded[:3]}).")
    if len(keep) < len(names):
        print(f"warning: {len(names) - len(keep)} of the {len(names)} names in {path} are not "
              "in the training split; using the other "
              f"{len(keep)}.", flush=True)
    return np.asarray(keep, np.int64)


def apply(source: sources.Source, split: str, subset: LabelSubset, mask: bool = False):
    """``source`` with ``split`` reduced to the chosen labelled examples (``mask``: every
    example kept, the others' labels -1), and the number kept per class name ({} when
    ``subset`` keeps everything)."""
    if not subset.active:
        return source, {}
    if not hasattr(source, "labels_only_at" if mask else "restricted"):
        raise ValueError(f"dataset {source.info.name!r} cannot take a label subset.")
    labels = source.labels(split)
    if subset.name_file:
        keep = named(source.file_names(split), read_names(subset.name_file), subset.name_file)
    else:
        keep = balanced(labels, subset.fraction, subset.per_class, subset.seed)
    counts = count_per_class(labels[keep], source.class_names)
    if mask:
        return source.labels_only_at(split, keep), counts
    return source.restricted(split, keep), counts


def count_per_class(labels: np.ndarray, class_names) -> Dict[str, int]:
    """{class name: how many of ``labels``} for every class that occurs."""
    values, counts = np.unique(labels, return_counts=True)
    return {str(class_names[v]): int(n) for v, n in zip(values, counts)}
