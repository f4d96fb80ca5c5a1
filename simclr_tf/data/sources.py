"""Data sources: where the examples of a split come from.

A source yields ``(image uint8 [H, W, 3], label int32)`` pairs for a split; unlabelled images
carry the label -1 (``UNLABELLED``). A split is a name (``train``) or, as TFDS spells them, a
slice (``train[:10%]``, ``train[1000:]``, ``train[10%:-5%]``) or a sum (``train+validation``),
with every source. The image folder source lives in ``simclr_tf/data/folder.py``;
``pipeline.get_source`` picks a source from a ``--dataset`` value.
"""

import copy
import dataclasses
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from simclr_tf.data import shapes_dataset

UNLABELLED = -1
_SLICE = re.compile(r"^([^\[\]+]+)(?:\[(-?\d*%?)?:(-?\d*%?)?\])?$")


@dataclasses.dataclass(frozen=True)
class SourceInfo:
    """What the training programs need to know about a dataset before reading it.

    ``num_classes`` is 0 for unlabelled images."""

    name: str
    num_classes: int
    splits: Tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class SplitPart:
    """One term of a split: the examples [start, stop) of the split ``name``; None bounds
    are the ends. Bounds ending in % are percents of the split's size."""

    name: str
    start: Optional[str] = None
    stop: Optional[str] = None

    def indices(self, size: int) -> np.ndarray:
        """The indices into the split that this part selects, as TFDS would (percents
        rounded to the closest example)."""
        bounds = [_absolute(b, size) for b in (self.start, self.stop)]
        return np.arange(size)[slice(*bounds)]


def _absolute(bound: Optional[str], size: int) -> Optional[int]:
    if bound is None or bound == "":
        return None
    if bound.endswith("%"):
        return int(round(float(bound[:-1]) * size / 100.0))
    return int(bound)


def parse_split(split: str) -> List[SplitPart]:
    """``train[:10%]+test`` -> its parts. Raises ValueError naming the split and the forms
    accepted."""
    parts = []
    for term in str(split).replace(" ", "").split("+"):
        match = _SLICE.match(term)
        if not match:
            raise ValueError(
                f"split {split!r} is not understood; give a split name (train), a slice as "
                "TFDS spells it (train[:10%], train[1000:], train[10%:20%]) or a sum "
                "(train+validation).")
        parts.append(SplitPart(match.group(1), match.group(2) or None, match.group(3) or None))
    return parts


class Source:
    """A dataset: ``read(split)`` gives (uint8 image [H, W, 3], int32 label) examples."""

    info: SourceInfo

    @property
    def labelled(self) -> bool:
        """Whether the examples carry class labels (0 classes: unlabelled images)."""
        return self.info.num_classes > 0

    @property
    def classifiable(self) -> bool:
        """Whether there are classes to tell apart (two or more): a classifier, its top-1 and
        the kNN monitor need them; a folder with one class sub-folder has one."""
        return self.info.num_classes >= 2

    @property
    def class_names(self) -> Sequence[str]:
        """Human-readable class names when the source has them, else the class indices."""
        return [str(i) for i in range(self.info.num_classes)]

    def read(self, split: str, input_context: Optional[tf.distribute.InputContext] = None,
             shuffle_files: bool = False) -> tf.data.Dataset:
        raise NotImplementedError

    # Whether ``read_encoded`` gives (encoded image bytes, int32 label) examples of the same
    # split in the same order as ``read``: training then decodes only the crops' box
    # (``file_views``). Sources whose files may be broken keep decoding in ``read``, where
    # a broken file is skipped and named.
    reads_encoded = False

    def read_encoded(self, split: str,
                     input_context: Optional[tf.distribute.InputContext] = None,
                     shuffle_files: bool = False) -> tf.data.Dataset:
        raise NotImplementedError

    def known_num_examples(self, split: str) -> Optional[int]:
        """The split's size when the source knows it without reading the data."""
        return None

    def num_examples(self, split: str) -> int:
        """The split's size: known, from the dataset's cardinality, or counted."""
        self.check_split(split)
        known = self.known_num_examples(split)
        if known:
            return known
        ds = self.read(split)
        count = int(ds.cardinality())
        if count < 0:  # unknown or infinite: count once
            count = int(ds.reduce(np.int64(0), lambda n, _: n + 1))
        return count

    def split_name(self, name: str) -> str:
        """The split a name refers to (a folder source answers to aliases)."""
        return name

    def check_split(self, split: str):
        """Raises ValueError unless every part of ``split`` names a split of the source."""
        for part in parse_split(split):
            if self.split_name(part.name) not in self.info.splits:
                raise ValueError(
                    f"split {part.name!r} does not exist in dataset {self.info.name!r}; its "
                    f"splits are {list(self.info.splits)}.")


def _shard(ds: tf.data.Dataset, ctx: Optional[tf.distribute.InputContext]) -> tf.data.Dataset:
    if ctx is None or ctx.num_input_pipelines == 1:
        return ds
    return ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)


class SubsettableSource(Source):
    """A source whose reading honours label subsets: ``restricted`` and ``labels_only_at``
    (what ``label_subsets.apply`` and the kNN bank ask for) give copies with a subset."""

    # Label subsets by split, never changed in place: restricted() and labels_only_at() copy.
    _subsets: Dict[str, np.ndarray] = {}
    _labelled: Dict[str, np.ndarray] = {}

    def restricted(self, split: str, keep: np.ndarray) -> "SubsettableSource":
        """A copy of this source whose ``split`` holds only the examples at ``keep``
        (indices into the split in the order ``labels`` gives it)."""
        return self._with_subset("_subsets", split, keep)

    def labels_only_at(self, split: str, keep: np.ndarray) -> "SubsettableSource":
        """A copy of this source whose ``split`` keeps every example but the labels of those
        at ``keep`` only; the others read label -1 (distillation's unlabelled images)."""
        return self._with_subset("_labelled", split, keep)

    def _with_subset(self, kind: str, split: str, keep: np.ndarray) -> "SubsettableSource":
        other = copy.copy(self)
        keys = self._subset_keys(split, np.asarray(keep, np.int64))
        setattr(other, kind, {**getattr(self, kind), split: keys})
        return other

    def _subset_keys(self, split: str, keep: np.ndarray) -> np.ndarray:
        """How a subset of ``split`` is kept: here, the indices themselves."""
        return keep


class InMemorySource(SubsettableSource):
    """A source whose splits are lists held in memory (decoded images, or file names), so
    slices, sums and label subsets are index arithmetic. Subclasses give ``_columns`` and
    ``_to_images``."""

    def _columns(self, name: str) -> Tuple[np.ndarray, np.ndarray]:
        """(items [N], labels int32 [N]) of the split ``name``."""
        raise NotImplementedError

    def _to_images(self, ds: tf.data.Dataset, shuffle: bool) -> tf.data.Dataset:
        """(item, label) -> (image uint8 [H, W, 3], label)."""
        return ds

    def examples(self, split: str) -> Tuple[np.ndarray, np.ndarray]:
        """(items, labels) of a split: its slices and sums, and its label subset if any."""
        self.check_split(split)
        items, labels = [], []
        for part in parse_split(split):
            column, label = self._columns(self.split_name(part.name))
            keep = part.indices(len(label))
            items.append(column[keep])
            labels.append(label[keep])
        items, labels = np.concatenate(items), np.concatenate(labels).astype(np.int32)
        keep = self._subsets.get(split)
        if keep is not None:
            items, labels = items[keep], labels[keep]
        labelled = self._labelled.get(split)
        if labelled is not None:
            labels = np.where(np.isin(np.arange(len(labels)), labelled), labels, -1)
        return items, labels.astype(np.int32)

    def labels(self, split: str) -> np.ndarray:
        """The labels of a split, without reading any image."""
        return self.examples(split)[1]

    def known_num_examples(self, split):
        return len(self.labels(split))

    def read(self, split, input_context=None, shuffle_files=False):
        items, labels = self.examples(split)
        ds = tf.data.Dataset.from_tensor_slices((items, labels))
        return self._to_images(_shard(ds, input_context), shuffle_files)


class ArraySource(InMemorySource):
    """Decoded images held in memory: ``splits`` maps a split name to (images uint8
    [N, H, W, 3], labels int [N]). For NumPy data in a notebook, and for the benchmark."""

    def __init__(self, splits: Dict[str, Tuple[np.ndarray, np.ndarray]], num_classes: int,
                 name: str = "arrays"):
        for split, (images, labels) in splits.items():
            if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
                raise ValueError(f"split {split!r}: images must be uint8 [N, H, W, 3]; got "
                                 f"{images.dtype} {images.shape}.")
            if len(labels) != len(images):
                raise ValueError(f"split {split!r}: {len(images)} images but {len(labels)} "
                                 "labels.")
        self._splits = splits
        self.info = SourceInfo(name, num_classes, tuple(splits))

    def arrays(self, split: str) -> Tuple[np.ndarray, np.ndarray]:
        """The split as NumPy arrays (images uint8 [N, H, W, 3], labels [N])."""
        return self.examples(split)

    def _columns(self, name):
        images, labels = self._splits[name]
        return images, np.asarray(labels, np.int32)


class BuiltinSource(ArraySource):
    """The built-in generated dataset (``simclr_tf/data/shapes_dataset.py``): no download.

    An ``ArraySource`` whose splits are generated when first read."""

    def __init__(self, seed: int = 0, image_size: int = shapes_dataset.DEFAULT_SIZE,
                 sizes: Optional[Dict[str, int]] = None):
        self.seed = seed
        self.image_size = image_size
        self.sizes = dict(shapes_dataset.DEFAULT_SPLIT_SIZES if sizes is None else sizes)
        self.info = SourceInfo(shapes_dataset.NAME, shapes_dataset.NUM_CLASSES, tuple(self.sizes))
        self._cache: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}

    @property
    def class_names(self):
        return list(shapes_dataset.CLASS_NAMES)

    def _columns(self, name):
        if name not in self._cache:
            split_seed = self.seed * 1000 + list(self.sizes).index(name)
            self._cache[name] = shapes_dataset.generate(self.sizes[name], self.image_size,
                                                        split_seed)
        return self._cache[name]

    def known_num_examples(self, split: str) -> Optional[int]:
        if split in self.sizes and split not in self._subsets:
            return self.sizes[split]  # without generating the split
        return super().known_num_examples(split)


class TFDSSource(SubsettableSource):
    """A TFDS image-classification dataset, read offline from ``data_dir``. Splits are passed
    to TFDS as given, so its slices work; a label subset keeps examples by their TFDS ids."""

    def __init__(self, name: str, data_dir: Optional[str] = None, accepted: str = ""):
        import tensorflow_datasets as tfds  # imported here: it is slow to import

        self._tfds = tfds
        self._subsets: Dict[str, np.ndarray] = {}
        self._labelled: Dict[str, np.ndarray] = {}
        self._read_columns: Dict[Tuple[str, str], Tuple[np.ndarray, np.ndarray]] = {}
        try:
            self.builder = tfds.builder(name, data_dir=data_dir)
        except tfds.core.registered.DatasetNotFoundError as e:
            raise ValueError(f"unknown dataset {name!r}: use {accepted}.") from e
        features = self.builder.info.features
        if self.builder.info.supervised_keys is None or "label" not in features:
            raise ValueError(
                f"TFDS dataset {name!r} is not an image-classification dataset (it has no "
                f"(image, label) supervised keys; its features are {list(features)}).")
        splits = tuple(self.builder.info.splits) or ("train", "validation", "test")
        self.info = SourceInfo(name, int(features["label"].num_classes), splits)

    @property
    def class_names(self):
        names = self.builder.info.features["label"].names
        return list(names) if names else super().class_names

    def known_num_examples(self, split):
        if split in self._subsets:
            return len(self._subsets[split])
        try:
            return self.builder.info.splits[split].num_examples or None
        except (KeyError, ValueError, TypeError, AssertionError):
            return None

    def _as_dataset(self, split, read_config, shuffle_files=False, **kwargs):
        return tfds_split(self.builder, self.info.name, split, read_config=read_config,
                          shuffle_files=shuffle_files, **kwargs)

    def _ids_and(self, split: str, feature: str) -> Tuple[np.ndarray, np.ndarray]:
        """(tfds ids, ``feature``) of every example of the split, without decoding images;
        read once (a label subset asks for the labels, then the ids or the file names)."""
        if (split, feature) not in self._read_columns:
            self._read_columns[(split, feature)] = self._read_ids_and(split, feature)
        return self._read_columns[(split, feature)]

    def _read_ids_and(self, split: str, feature: str) -> Tuple[np.ndarray, np.ndarray]:
        self.check_split(split)
        config = self._tfds.ReadConfig(add_tfds_id=True)
        ds = self._as_dataset(split, config, decoders={"image": self._tfds.decode.SkipDecoding()})
        ds = ds.map(lambda ex: (ex["tfds_id"], ex[feature])).batch(4096)
        ids, values = zip(*[(i.numpy(), v.numpy()) for i, v in ds]) or ([], [])
        return np.concatenate(ids), np.concatenate(values)

    def labels(self, split: str) -> np.ndarray:
        return self._ids_and(split, "label")[1].astype(np.int32)

    def file_names(self, split: str) -> np.ndarray:
        """The image file names of a split (datasets with a ``file_name`` feature)."""
        if "file_name" not in self.builder.info.features:
            raise ValueError(f"TFDS dataset {self.info.name!r} has no file names (its "
                             f"features are {list(self.builder.info.features)}).")
        return self._ids_and(split, "file_name")[1]

    def _subset_keys(self, split: str, keep: np.ndarray) -> np.ndarray:
        """A label subset is kept as the examples' TFDS ids."""
        return self._ids_and(split, "label")[0][keep]

    def read(self, split, input_context=None, shuffle_files=False):
        return self._examples(split, input_context, shuffle_files).map(
            to_rgb_uint8, num_parallel_calls=tf.data.AUTOTUNE)

    @property
    def reads_encoded(self) -> bool:
        """JPEG datasets (ImageNet, ...): training decodes only the crops' box. TFDS checked
        every image when it prepared the dataset. PNG ones (CIFAR-10) decode whole anyway."""
        features = self.builder.info.features
        image = features["image"] if "image" in features else None
        return getattr(image, "encoding_format", None) == "jpeg"

    def read_encoded(self, split, input_context=None, shuffle_files=False):
        decoders = {"image": self._tfds.decode.SkipDecoding()}
        return self._examples(split, input_context, shuffle_files, decoders).map(
            lambda image, label: (image, tf.cast(label, tf.int32)))

    def _examples(self, split, input_context, shuffle_files, decoders=None):
        """(image, label) of the split, the image decoded unless ``decoders`` says."""
        self.check_split(split)
        keep, labelled = self._subsets.get(split), self._labelled.get(split)
        config = self._tfds.ReadConfig(
            input_context=input_context, interleave_cycle_length=16, interleave_block_length=1,
            add_tfds_id=keep is not None or labelled is not None)
        if keep is None and labelled is None:
            return self._as_dataset(split, config, shuffle_files, as_supervised=True,
                                    decoders=decoders)
        ds = self._as_dataset(split, config, shuffle_files, decoders=decoders)
        if keep is not None:
            kept = _id_table(keep)
            ds = ds.filter(lambda ex: kept.lookup(ex["tfds_id"]) > 0)
        if labelled is None:
            return ds.map(lambda ex: (ex["image"], ex["label"]))
        table = _id_table(labelled)
        return ds.map(lambda ex: (ex["image"], tf.where(
            table.lookup(ex["tfds_id"]) > 0, tf.cast(ex["label"], tf.int64), -1)))


def _id_table(ids: np.ndarray) -> tf.lookup.StaticHashTable:
    """tfds id -> 1 for ``ids``, 0 for any other."""
    return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        tf.constant(ids), tf.ones(len(ids), tf.int32)), default_value=0)


def tfds_split(builder, name: str, split: str, **kwargs) -> tf.data.Dataset:
    """``builder.as_dataset(split=split, **kwargs)``, or a ValueError saying how to prepare
    the dataset when it is not (nothing is downloaded at run time) or naming the bad split."""
    try:
        return builder.as_dataset(split=split, **kwargs)
    except AssertionError as e:  # TFDS's way of saying "not downloaded and prepared"
        raise ValueError(
            f"TFDS dataset {name!r} is not prepared in data_dir {builder.data_dir!r}; "
            "simclr_tf never downloads at run time. Prepare it once on a machine with network "
            f"access: `tfds build {name} --data_dir=DIR` (ImageNet needs its tar files in "
            "DIR/downloads/manual), then pass --data_dir=DIR.") from e
    except ValueError as e:
        raise ValueError(f"cannot read split {split!r} of TFDS dataset {name!r}: {e}") from e


def to_rgb_uint8(image, label):
    """A TFDS image as RGB uint8 (grey ones repeated on three channels), the label int32."""
    if image.shape.rank == 3 and image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    return tf.image.convert_image_dtype(image, tf.uint8), tf.cast(label, tf.int32)


def require_labels(source: Source, what: str, min_classes: int = 2):
    """Raises ValueError, in one line, when ``what`` needs labels (of ``min_classes`` or more
    classes) that the source does not have."""
    where = getattr(source, "data_dir", None) or source.info.name
    if not source.labelled:
        raise ValueError(
            f"{what} needs labelled images, and the images in {where} have no labels (no "
            "class sub-folders). Give a labelled folder (--dataset=folder --data_dir=D with "
            "one sub-folder of images per class) or a labelled dataset and split.")
    if source.info.num_classes < min_classes:
        raise ValueError(
            f"{what} needs images of {min_classes} or more classes, and {where} holds one "
            f"class ({source.class_names[0]!r}). Give a folder with one sub-folder of images "
            "per class, two or more.")
