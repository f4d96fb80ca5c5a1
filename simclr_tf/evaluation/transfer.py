"""The SimCLR paper's linear transfer evaluation (appendix B.8) of a frozen encoder.

Per dataset (``transfer_datasets``): the encoder's ``final_avg_pool`` features of every image
(the shorter side resized to the image size and the centred square, no augmentation, in
inference mode); an L2-regularised logistic regression (``logistic``) fitted on the training
split for each strength of the grid and scored on the validation split (the dataset's own,
else a seeded 20% of the training split); the best strength refitted on training +
validation; its score on the test split by the dataset's metric. Results go to
``OUTPUT_DIR/transfer.json`` and ``transfer.md``, the paper's figure beside ours where the
architecture is the paper's (ResNet-50 4x).
"""

import dataclasses
import json
import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from simclr_tf.evaluation import logistic
from simclr_tf.evaluation import transfer_datasets as tds

PAPER_ARCHITECTURE = "ResNet-50 (4x)"


@dataclasses.dataclass
class Options:
    image_size: int = 224
    batch_size: int = 64
    grid_size: int = 45  # strengths between 1e-6 and 1e5, log-spaced (the paper's 45)
    seed: int = 0
    data_dir: Optional[str] = None


def extract(features_of: Callable[[tf.Tensor], np.ndarray], ds: tf.data.Dataset
            ) -> Tuple[np.ndarray, np.ndarray]:
    """(features [n, d] float32, labels) of every batch of ``ds``."""
    features, labels = [], []
    for images, label in ds:
        features.append(np.asarray(features_of(images), np.float32))
        labels.append(label.numpy())
    if not features:
        raise ValueError("the split holds no images.")
    return np.concatenate(features), np.concatenate(labels)


def _splits(spec: tds.TransferDataset, features_of, options: Options):
    """(train, validation, test) as (features, labels), the validation carved from train
    when the dataset has none."""
    def read(split):
        return extract(features_of, tds.images(spec, split, options.image_size,
                                               options.batch_size, options.data_dir))
    train = read(spec.train)
    if spec.validation:
        val = read(spec.validation)
    else:
        keep, held = tds.hold_out(train[1], options.seed)
        train, val = (train[0][keep], train[1][keep]), (train[0][held], train[1][held])
    return train, val, read(spec.test)


def evaluate(name: str, features_of, options: Options) -> Dict:
    """The protocol on one dataset: its result (score in %, chosen strength, sizes)."""
    spec = tds.lookup(name)
    start = time.time()
    train, val, test = _splits(spec, features_of, options)
    classes = tds.num_classes(spec, options.data_dir)
    grid = logistic.l2_grid(options.grid_size)
    best, scored = logistic.choose_l2(train, val, grid, classes, spec.metric, spec.multilabel)
    both = (np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]]))
    final = logistic.fit(*both, best, classes, spec.multilabel)
    score = logistic.METRICS[spec.metric](final.scores(test[0]), test[1])
    return {"dataset": name, "tfds_name": spec.tfds_name, "metric": spec.metric,
            "score": 100.0 * score, "l2": best,
            "validation_score": 100.0 * scored[best],
            "train_examples": len(train[1]), "validation_examples": len(val[1]),
            "test_examples": len(test[1]), "feature_dim": int(train[0].shape[1]),
            "paper_r50_4x": spec.paper_r50_4x, "seconds": round(time.time() - start, 1)}


def table(results: Sequence[Dict], architecture: str, what: str) -> str:
    """The Markdown table of ``results``, the paper's column filled for its architecture."""
    same = architecture == PAPER_ARCHITECTURE
    lines = [f"# Linear transfer: {what}", "",
             f"Encoder: {architecture}. Protocol: the SimCLR paper's (L2-regularised logistic "
             "regression on frozen features, strength chosen on validation, refitted on "
             "train + validation, scored on test).", "",
             f"| dataset | metric | ours | paper, {PAPER_ARCHITECTURE} | chosen L2 | train / "
             "val / test |", "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        paper = f"{r['paper_r50_4x']:.1f}" if same else f"({r['paper_r50_4x']:.1f})"
        lines.append(f"| {r['dataset']} | {r['metric']} | {r['score']:.1f} | {paper} | "
                     f"{r['l2']:.3g} | {r['train_examples']} / {r['validation_examples']} / "
                     f"{r['test_examples']} |")
    if not same:
        lines += ["", f"The paper's figures (in brackets) are for a {PAPER_ARCHITECTURE} "
                  "pretrained on ImageNet; this encoder is not that one."]
    return "\n".join(lines) + "\n"


def _write(path: str, text: str):
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def run(names: Sequence[str], features_of, options: Options, output_dir: str,
        architecture: str, what: str) -> List[Dict]:
    """Every dataset of ``names`` in turn (all checked first), a line each as it ends; the
    JSON and Markdown tables rewritten after each one, so a long run keeps what it has."""
    for name in names:
        tds.lookup(name)
    tf.io.gfile.makedirs(output_dir)
    results = []
    for name in names:
        result = evaluate(name, features_of, options)
        results.append(result)
        print(f"transfer: {name}: {result['metric']} {result['score']:.2f} (paper, "
              f"{PAPER_ARCHITECTURE}: {result['paper_r50_4x']}), L2 {result['l2']:.3g}, "
              f"{result['seconds']} s", flush=True)
        _write(os.path.join(output_dir, "transfer.json"), json.dumps(
            {"encoder": what, "architecture": architecture, "results": results}, indent=2))
        _write(os.path.join(output_dir, "transfer.md"), table(results, architecture, what))
    return results


def architecture_name(resnet_depth: int, width_multiplier: float, sk_ratio: float) -> str:
    """E.g. ``ResNet-50 (4x)``, ``ResNet-152 (3x+SK)``."""
    width = f"{width_multiplier:g}x" + ("+SK" if sk_ratio > 0 else "")
    return f"ResNet-{resnet_depth} ({width})"
