"""What ``simclr-visualize`` shows, taken from a run or an export (``pictures.py`` draws it).

- ``views.png``: training images and pairs of their views, made by the run's own input
  pipeline and flags (crop, flip, colour strength and kind, blur);
- ``embedding.png``: the encoder's features (``final_avg_pool``, inference mode) of a seeded
  subset of a labelled split in 2-D (UMAP when installed, else t-SNE, else PCA), by class;
- ``retrieval.png``: query images and their nearest neighbours by cosine similarity;
- ``curves.png``: a run's TensorBoard scalars (loss, contrastive accuracy, probe and kNN
  top-1, learning rate, ...), training and evaluation.

Views need only the data flags, embedding and retrieval a model (a run's newest checkpoint or
an export), curves a run's summaries (``pictures`` is imported by the functions that draw,
so reading needs no matplotlib).
"""

import dataclasses
import glob
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from simclr_tf.core import config as config_lib
from simclr_tf.core import endpoints as ep
from simclr_tf.data import pipeline as data_lib
from simclr_tf.data import sources
from simclr_tf.data import view_pairs as views_lib
from simclr_tf.evaluation import knn

# The curves drawn, those a run has, in this order, at most MAX_CURVES (a pretraining run:
# the first six; a fine-tuning run: top-1, accuracy, learning rate, loss, top-5).
CURVES = ("train/contrast_loss", "train/contrast_acc", "eval/knn_top1", "eval/top1",
          "train/supervised_acc", "train/learning_rate", "train/loss", "eval/top5")
MAX_CURVES = 6


@dataclasses.dataclass
class Options:
    """What to draw: ``num_images`` originals with ``num_pairs`` view pairs each; up to
    ``num_points`` examples of ``split`` embedded by ``method``; ``num_queries`` queries with
    ``num_neighbours`` neighbours each."""

    num_images: int = 6
    num_pairs: int = 3
    num_points: int = 1000
    method: str = "auto"
    num_queries: int = 6
    num_neighbours: int = 6
    split: Optional[str] = None  # default: the run's eval split
    compare_dirs: Tuple[str, ...] = ()  # runs whose curves are drawn beside the run's


def embed(features_of: Callable[[tf.Tensor], tf.Tensor], source: sources.Source, split: str,
          image_size: int, limit: int, seed: int, batch_size: int = 100
          ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features [n, d], labels [n], images uint8 [n, S, S, 3]) of a seeded subset of at most
    ``limit`` examples of ``split`` (``knn.bank_split``), centre-cropped as in evaluation."""
    sub, sub_split = knn.bank_split(source, split, limit, seed)
    features, labels, images = [], [], []
    for batch, label in data_lib.build_dataset(sub, sub_split, "eval", batch_size, image_size):
        features.append(np.asarray(features_of(batch), np.float32))
        labels.append(label.numpy())
        images.append(np.round(batch.numpy() * 255).astype(np.uint8))
    if not features:
        raise ValueError(f"split {split!r} of {source.info.name!r} has no images to embed.")
    return np.concatenate(features), np.concatenate(labels), np.concatenate(images)


def nearest(features: np.ndarray, queries: np.ndarray, k: int
            ) -> Tuple[np.ndarray, np.ndarray]:
    """(indices [q, k], cosine similarities [q, k]) of each query row's k most similar other
    rows of ``features`` (the query itself left out)."""
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    similarity = unit[queries] @ unit.T
    similarity[np.arange(len(queries)), queries] = -np.inf
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(similarity, order, axis=1)


def read_scalars(model_dir: str) -> Dict[str, Dict[int, float]]:
    """{"train/loss": {step: value}, "eval/knn_top1": ..., ...} from a run's summaries."""
    series: Dict[str, Dict[int, float]] = {}
    for kind in ("train", "eval"):
        for path in sorted(glob.glob(os.path.join(model_dir, kind, "events.out.tfevents.*"))):
            for record in tf.data.TFRecordDataset(path):
                event = tf.compat.v1.Event.FromString(record.numpy())
                for value in event.summary.value:
                    if value.HasField("tensor") and not value.tensor.string_val:
                        array = tf.make_ndarray(value.tensor)
                        if array.size == 1:
                            series.setdefault(f"{kind}/{value.tag}", {})[event.step] = float(
                                array.reshape(()))
    return series


def draw(output_dir: str, cfg: config_lib.Config, source: sources.Source,
         features_of: Optional[Callable[[tf.Tensor], tf.Tensor]], model_dir: Optional[str],
         options: Options, what: str) -> List[str]:
    """Writes the pictures that ``features_of`` (a model) and ``model_dir`` (a run's
    summaries) allow into ``output_dir``; returns their paths. ``what`` names the model."""
    from simclr_tf.tools import pictures  # noqa: PLC0415 (matplotlib: only when drawing)

    tf.io.gfile.makedirs(output_dir)
    written = []
    originals, views = views_lib.view_pairs(cfg, source, options.num_images, options.num_pairs)
    written.append(pictures.views_png(
        os.path.join(output_dir, "views.png"), originals, views,
        f"{source.info.name}: views at {cfg.image_size} px, colour strength "
        f"{cfg.color_jitter_strength} ({cfg.color_jitter_impl}), blur "
        f"{'on' if cfg.use_blur else 'off'}"))
    if features_of is not None and source.labelled:
        written += _embedding_pictures(output_dir, cfg, source, features_of, options, what)
    elif features_of is not None:
        print(f"{source.info.name}: unlabelled images; no embedding or retrieval picture "
              "(they colour and title images by class).", flush=True)
    if model_dir:
        written += _curves(output_dir, model_dir, options.compare_dirs)
    return written


def _curves(output_dir: str, model_dir: str, compare_dirs: Sequence[str]) -> List[str]:
    """curves.png: the run's scalars (and those of ``compare_dirs``, in the same panels)."""
    from simclr_tf.tools import pictures  # noqa: PLC0415 (matplotlib: only when drawing)

    dirs = [model_dir, *compare_dirs]
    for other in compare_dirs:
        if not read_scalars(other):
            raise ValueError(f"--compare_dirs: {other} has no training summaries (its train/ "
                             "and eval/ folders hold no events files): give run folders.")
    runs = {_label(d, dirs): read_scalars(d) for d in dirs}
    present = set().union(*(series.keys() for series in runs.values()))
    curves = [name for name in CURVES if name in present][:MAX_CURVES]
    if not curves:
        return []
    runs = {label: {n: s[n] for n in curves if n in s} for label, s in runs.items()}
    what = model_dir if len(dirs) == 1 else ", ".join(runs)
    return [pictures.curves_png(os.path.join(output_dir, "curves.png"), runs,
                                f"training curves of {what}", curves)]


def _label(model_dir: str, dirs: Sequence[str]) -> str:
    """The shortest tail of ``model_dir``'s path that tells it from the other ``dirs``."""
    parts = os.path.normpath(model_dir).split(os.sep)
    others = [os.path.normpath(d).split(os.sep) for d in dirs if d != model_dir]
    for n in range(1, len(parts) + 1):
        if all(o[-n:] != parts[-n:] for o in others):
            return os.sep.join(parts[-n:])
    return model_dir


def _embedding_pictures(output_dir, cfg, source, features_of, options, what) -> List[str]:
    from simclr_tf.tools import pictures  # noqa: PLC0415 (matplotlib: only when drawing)

    split = options.split or cfg.eval_split
    sources.require_labels(source, "simclr-visualize's embedding and retrieval pictures",
                           min_classes=1)
    features, labels, images = embed(features_of, source, split, cfg.image_size,
                                     options.num_points, cfg.seed)
    names = list(source.class_names)
    points, method = pictures.project_2d(features, options.method, cfg.seed)
    paths = [pictures.embedding_png(
        os.path.join(output_dir, "embedding.png"), points, labels, names,
        f"{what}: final_avg_pool of {len(features)} {split} images ({method})")]
    rng = np.random.default_rng(cfg.seed)
    queries = rng.choice(len(features), min(options.num_queries, len(features)), replace=False)
    k = min(options.num_neighbours, len(features) - 1)
    index, similarity = nearest(features, queries, k)
    paths.append(pictures.retrieval_png(
        os.path.join(output_dir, "retrieval.png"), images[queries] / 255.0, labels[queries],
        images[index] / 255.0, labels[index], similarity, names,
        f"{what}: nearest of {len(features)} {split} images (cosine, final_avg_pool)"))
    return paths


def model_features(model) -> Callable[[tf.Tensor], tf.Tensor]:
    """``images -> final_avg_pool`` of a model or an export, in inference mode."""
    call = tf.function(lambda images: model(images, training=False)[ep.FINAL_AVG_POOL])
    return lambda images: call(images).numpy()
