"""The SimCLR paper's transfer datasets, by their TFDS names, with each one's splits, metric
and the paper's figure (Table 8: linear evaluation of the ResNet-50 (4x), top-1 or the
dataset's own metric, in %).

Read offline from a TFDS data_dir (nothing is downloaded). Birdsnap and FGVC-Aircraft, in
the paper, are not in TFDS: they are named in ``NOT_IN_TFDS`` and refused with that reason.
"""

import dataclasses
import functools
from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from simclr_tf.data import augment, sources


@dataclasses.dataclass(frozen=True)
class TransferDataset:
    """One dataset of the protocol: where it is, how it is split and scored."""

    tfds_name: str
    train: str
    test: str
    validation: Optional[str]  # None: a seeded 20% of ``train`` per class is held out
    metric: str  # logistic.METRICS: top1, mean_per_class or map_11
    paper_r50_4x: float  # the paper's linear-evaluation figure (Table 8)
    multilabel: bool = False  # VOC2007: several classes per image


DATASETS: Dict[str, TransferDataset] = {
    "food101": TransferDataset("food101", "train", "validation", None, "top1", 76.9),
    "cifar10": TransferDataset("cifar10", "train", "test", None, "top1", 95.3),
    "cifar100": TransferDataset("cifar100", "train", "test", None, "top1", 80.2),
    # SUN397 and DTD: the first of the creators' splits, as in the paper.
    "sun397": TransferDataset("sun397/standard-part1-120k", "train", "test", None, "top1",
                              65.9),
    "cars196": TransferDataset("cars196", "train", "test", None, "top1", 60.0),
    "voc2007": TransferDataset("voc/2007", "train", "test", "validation", "map_11", 84.2,
                               multilabel=True),
    "dtd": TransferDataset("dtd", "train", "test", "validation", "top1", 78.9),
    "oxford_iiit_pet": TransferDataset("oxford_iiit_pet", "train", "test", None,
                                       "mean_per_class", 89.2),
    # TFDS's train split holds 30 images per class, the paper's protocol; test the rest.
    "caltech101": TransferDataset("caltech101", "train", "test", None, "mean_per_class", 93.9),
    "oxford_flowers102": TransferDataset("oxford_flowers102", "train", "test", "validation",
                                         "mean_per_class", 95.0),
}
NOT_IN_TFDS = {"birdsnap": 48.4, "fgvc_aircraft": 61.2}
VALIDATION_SHARE = 0.2


def lookup(name: str) -> TransferDataset:
    """The dataset called ``name`` (our name or its TFDS name), or a ValueError naming the
    accepted ones."""
    for key, spec in DATASETS.items():
        if name in (key, spec.tfds_name):
            return spec
    if name in NOT_IN_TFDS:
        raise ValueError(f"{name!r} (in the paper's transfer table) is not in TFDS, so it "
                         f"cannot be read here; the TFDS ones are {', '.join(DATASETS)}.")
    raise ValueError(f"unknown transfer dataset {name!r}; use one or more of "
                     f"{', '.join(DATASETS)}.")


@functools.lru_cache(maxsize=None)
def _builder(tfds_name: str, data_dir: Optional[str]):
    import tensorflow_datasets as tfds  # noqa: PLC0415 (slow to import)

    return tfds.builder(tfds_name, data_dir=data_dir)


def num_classes(spec: TransferDataset, data_dir: Optional[str]) -> int:
    features = _builder(spec.tfds_name, data_dir).info.features
    label = features["labels"].feature if spec.multilabel else features["label"]
    return int(label.num_classes)


def _label(spec: TransferDataset, classes: int):
    """example -> label: the class index, or (VOC) a row of 1 (present), -1 (present only as
    "difficult": ignored by the metric) and 0."""
    if not spec.multilabel:
        return lambda ex: tf.cast(ex["label"], tf.int32)

    def multi_hot(ex):
        every = tf.reduce_max(tf.one_hot(ex["labels"], classes, dtype=tf.int32), axis=0)
        clear = tf.reduce_max(tf.one_hot(ex["labels_no_difficult"], classes, dtype=tf.int32),
                              axis=0)
        return tf.where(clear > 0, 1, -every)
    return multi_hot


def images(spec: TransferDataset, split: str, image_size: int, batch_size: int,
           data_dir: Optional[str]) -> tf.data.Dataset:
    """Batches of (images float [B, S, S, 3] in [0, 1], labels) of ``split``: the shorter side
    resized to S and the centred S x S square (bicubic), no augmentation, as in the paper."""
    ds = sources.tfds_split(_builder(spec.tfds_name, data_dir), spec.tfds_name, split,
                            shuffle_files=False)
    label = _label(spec, num_classes(spec, data_dir))

    def prepare(ex):
        image, _ = sources.to_rgb_uint8(ex["image"], 0)
        view = augment.center_crop(augment.to_float(image), image_size, 1.0)
        return tf.clip_by_value(view, 0.0, 1.0), label(ex)

    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(2)


def hold_out(labels: np.ndarray, seed: int, share: float = VALIDATION_SHARE
             ) -> Tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices): a seeded ``share`` of every class held out; of
    every image for multi-label rows, or when the classes are too small for a share each."""
    if len(labels) < 2:
        raise ValueError(f"a training split of {len(labels)} image(s) cannot give a "
                         "validation split.")
    rng = np.random.default_rng(seed)
    val = []
    if labels.ndim == 1:
        for c in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == c))
            val.extend(members[:int(round(share * len(members)))])
    if not val:
        val = rng.permutation(len(labels))[:max(1, int(round(share * len(labels))))]
    val = np.sort(np.asarray(val, np.int64))
    return np.setdiff1d(np.arange(len(labels)), val), val
