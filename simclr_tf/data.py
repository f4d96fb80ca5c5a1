"""Data sources (TFDS, an image folder, the built-in generated set) and tf.data pipelines.

A source yields ``(image uint8 [H, W, 3], label int32)`` pairs for a split; ``build_dataset``
turns it into per-replica batches for pretraining (two views stacked on channels, [b, S, S, 6]),
fine-tuning or evaluation ([b, S, S, 3]). Batch sizes given here are GLOBAL; each input
pipeline gets ``global / num_replicas`` from its ``tf.distribute.InputContext``.
"""

import dataclasses
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from simclr_tf import augment
from simclr_tf import shapes

BUILTIN = shapes.NAME
FOLDER = "folder"
MODES = ("pretrain", "finetune", "eval")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
EVAL_FOLDER_NAMES = ("val", "validation", "test")


@dataclasses.dataclass(frozen=True)
class SourceInfo:
    """What the training programs need to know about a dataset before reading it."""

    name: str
    num_classes: int
    splits: Tuple[str, ...]


class Source:
    """A dataset: ``read(split)`` gives (uint8 image [H, W, 3], int32 label) examples."""

    info: SourceInfo

    def read(self, split: str, input_context: Optional[tf.distribute.InputContext] = None,
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

    def check_split(self, split: str):
        if split not in self.info.splits:
            raise ValueError(
                f"split {split!r} does not exist in dataset {self.info.name!r}; its splits "
                f"are {list(self.info.splits)}.")


def _shard(ds: tf.data.Dataset, ctx: Optional[tf.distribute.InputContext]) -> tf.data.Dataset:
    if ctx is None or ctx.num_input_pipelines == 1:
        return ds
    return ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)


class ArraySource(Source):
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
        self.check_split(split)
        return self._splits[split]

    def known_num_examples(self, split):
        return len(self.arrays(split)[0])

    def read(self, split, input_context=None, shuffle_files=False):
        images, labels = self.arrays(split)
        ds = tf.data.Dataset.from_tensor_slices((images, np.asarray(labels, np.int32)))
        return _shard(ds, input_context)


class BuiltinSource(ArraySource):
    """The built-in generated dataset (see ``simclr_tf/shapes.py``): no download needed.

    An ``ArraySource`` whose splits are generated when first read."""

    def __init__(self, seed: int = 0, image_size: int = shapes.DEFAULT_SIZE,
                 sizes: Optional[Dict[str, int]] = None):
        self.seed = seed
        self.image_size = image_size
        self.sizes = dict(shapes.DEFAULT_SPLIT_SIZES if sizes is None else sizes)
        self.info = SourceInfo(BUILTIN, shapes.NUM_CLASSES, tuple(self.sizes))
        self._cache: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}

    def arrays(self, split: str) -> Tuple[np.ndarray, np.ndarray]:
        """The split as NumPy arrays (images uint8 [N, S, S, 3], labels int32 [N])."""
        self.check_split(split)
        if split not in self._cache:
            split_seed = self.seed * 1000 + list(self.sizes).index(split)
            self._cache[split] = shapes.generate(self.sizes[split], self.image_size, split_seed)
        return self._cache[split]

    def known_num_examples(self, split: str) -> Optional[int]:
        self.check_split(split)
        return self.sizes[split]  # without generating the split


def _list_images(folder: str) -> Tuple[List[str], int]:
    """Image files directly inside `folder` (sorted), and the number of other files skipped."""
    files, skipped = [], 0
    for name in sorted(tf.io.gfile.listdir(folder)):
        path = os.path.join(folder, name.rstrip("/"))
        # Names with an image extension are taken as files without asking (on GCS every
        # isdir is a request: a folder of 100,000 images would start slowly).
        if name.lower().endswith(IMAGE_EXTENSIONS) and not name.endswith("/"):
            files.append(path)
        elif not tf.io.gfile.isdir(path):
            skipped += 1
    return files, skipped


def _class_folders(root: str) -> List[str]:
    return sorted(n.rstrip("/") for n in tf.io.gfile.listdir(root)
                  if tf.io.gfile.isdir(os.path.join(root, n.rstrip("/"))))


class FolderSource(Source):
    """Images in class sub-folders: ``data_dir/<class>/<image>``.

    Splits: ``train`` and the eval split from ``data_dir/train/`` and ``data_dir/val/`` (or
    ``validation/`` or ``test/``) when present; otherwise ``train`` and ``validation`` are a
    seeded split of each class's files with ``holdout_fraction`` held out. JPEG, PNG, BMP and
    GIF of any size with 1, 3 or 4 channels are read as RGB. Broken files (failing the byte
    checks of ``image_file_problem`` or TF's decoder) are skipped, counted (``skipped``) and
    the first MAX_NAMED_SKIPS named, instead of stopping a long run.
    """

    def __init__(self, data_dir: Optional[str], holdout_fraction: float = 0.1, seed: int = 0):
        if not data_dir:
            raise ValueError("--data_dir is required with --dataset=folder: the folder that "
                             "holds one sub-folder of images per class.")
        if not tf.io.gfile.exists(data_dir):
            raise ValueError(f"data_dir {data_dir!r} does not exist; it must be a folder with "
                             "one sub-folder of images per class.")
        if not tf.io.gfile.isdir(data_dir):
            raise ValueError(f"data_dir {data_dir!r} is a file, not a folder; it must be a "
                             "folder with one sub-folder of images per class.")
        if not 0.0 < holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction={holdout_fraction} must be in (0, 1).")
        self.data_dir = data_dir
        self._skipped = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_files")
        subdirs = _class_folders(data_dir)
        eval_dirs = [d for d in EVAL_FOLDER_NAMES if d in subdirs]
        if "train" in subdirs:
            self._files = {"train": self._scan(os.path.join(data_dir, "train"))}
            for name in eval_dirs:
                self._files[name] = self._scan(os.path.join(data_dir, name))
        else:
            self._files = self._holdout(self._scan(data_dir), holdout_fraction, seed)
        self.class_names = sorted({c for split in self._files.values() for c, _ in split})
        index = {c: i for i, c in enumerate(self.class_names)}
        self._examples = {
            split: ([p for _, p in items], [index[c] for c, _ in items])
            for split, items in self._files.items()}
        self.info = SourceInfo(FOLDER, len(self.class_names), tuple(self._files))

    @staticmethod
    def _scan(root: str) -> List[Tuple[str, str]]:
        classes = _class_folders(root)
        if not classes:
            raise ValueError(f"data_dir {root!r} has no class sub-folders; put the images of "
                             "each class in a sub-folder named after the class.")
        items, skipped = [], 0
        for c in classes:
            files, other = _list_images(os.path.join(root, c))
            skipped += other
            items += [(c, f) for f in files]
        if skipped:
            logging.warning("Skipped %d files without an image extension %s under %s.",
                            skipped, IMAGE_EXTENSIONS, root)
        if not items:
            raise ValueError(f"data_dir {root!r} has class folders {classes[:5]} but no "
                             f"images in them (accepted extensions: {IMAGE_EXTENSIONS}).")
        return items

    @staticmethod
    def _holdout(items, fraction, seed) -> Dict[str, List[Tuple[str, str]]]:
        rng = np.random.default_rng(seed)
        train, held = [], []
        by_class: Dict[str, List[Tuple[str, str]]] = {}
        for item in items:
            by_class.setdefault(item[0], []).append(item)
        for c in sorted(by_class):
            files = by_class[c]
            order = rng.permutation(len(files))
            # At least one per class with two or more images, so no class is left unseen.
            n_held = max(1, int(round(fraction * len(files)))) if len(files) > 1 else 0
            held += [files[i] for i in sorted(order[:n_held])]
            train += [files[i] for i in sorted(order[n_held:])]
        return {"train": train, "validation": held}

    def known_num_examples(self, split):
        self.check_split(split)
        return len(self._examples[split][0])

    def read(self, split, input_context=None, shuffle_files=False):
        self.check_split(split)
        paths, labels = self._examples[split]
        ds = tf.data.Dataset.from_tensor_slices((tf.constant(paths, tf.string, [len(paths)]),
                                                 np.asarray(labels, np.int32)))
        ds = _shard(ds, input_context)
        if shuffle_files:
            ds = ds.shuffle(max(1, len(paths)), reshuffle_each_iteration=True)
        # A file that passes the byte checks can still fail in TF's decoder, an error that
        # only ignore_errors can drop. To count and name it, each file carries its position
        # and the names of the HISTORY files before it; after the drop, a gap in the
        # positions names the files that were dropped (an end marker finds one at the end).
        end = tf.data.Dataset.from_tensors((tf.constant(""), tf.constant(0, tf.int32), True))
        ds = ds.map(_not_end).concatenate(end)
        ds = ds.scan((tf.constant(0, tf.int64), tf.fill([HISTORY], "")), _with_position)
        ds = ds.map(self._decode_or_skip, num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)  # positions in order, whatever the pipeline's option
        ds = ds.ignore_errors()
        ds = ds.scan(tf.constant(-1, tf.int64), self._count_dropped)
        return ds.filter(_is_ok).map(_without_ok)

    @property
    def skipped(self) -> int:
        """How many files were skipped as broken so far (empty, not an image, truncated, or
        failing in TF's decoder)."""
        return int(self._skipped.numpy())

    def _name_skipped(self, count, names, problem):
        """Counts ``count`` skipped files; names them while fewer than MAX_NAMED_SKIPS were."""
        total = self._skipped.assign_add(count)

        def name_them():
            tf.print("simclr_tf: skipping", tf.strings.reduce_join(names, separator=", "), "-",
                     problem, output_stream=sys.stderr)
            return tf.constant(True)

        return tf.cond(total - count < MAX_NAMED_SKIPS, name_them, lambda: tf.constant(False))

    def _decode_or_skip(self, position, path, label, history, is_end):
        """``(position, image, label, ok, history)``: a file that fails the byte checks is
        skipped here, counted and named; a file that fails in the decoder raises."""
        def check_and_decode():
            contents = tf.io.read_file(path)
            problem = image_file_problem(contents)
            ok = tf.equal(problem, "")

            def skip():
                with tf.control_dependencies([self._name_skipped(
                        tf.constant(1, tf.int64), path[tf.newaxis], problem)]):
                    return tf.zeros([1, 1, 3], tf.uint8)

            return tf.cond(ok, lambda: _decode(contents), skip), ok

        image, ok = tf.cond(is_end, lambda: (tf.zeros([1, 1, 3], tf.uint8), tf.constant(False)),
                            check_and_decode)
        return position, image, label, ok, history

    def _count_dropped(self, last, element):
        position, image, label, ok, history = element
        dropped = position - last - 1
        named = tf.cond(dropped > 0, lambda: self._name_skipped(
            dropped, history[HISTORY - tf.minimum(dropped, HISTORY):], "TF could not read or decode it"),
            lambda: tf.constant(False))
        with tf.control_dependencies([named]):
            return position, (image, label, tf.identity(ok))


MAX_NAMED_SKIPS = 5  # broken files named on the console; all are counted
HISTORY = 16  # names carried with each file, to name the files the decoder dropped before it


def _not_end(path, label):
    return path, label, tf.constant(False)


def _with_position(state, element):
    position, history = state
    path, label, is_end = element
    new_state = (position + 1, tf.concat([history[1:], path[tf.newaxis]], 0))
    return new_state, (position, path, label, history, is_end)


def _is_ok(image, label, ok):
    del image, label
    return ok


def _without_ok(image, label, ok):
    del ok
    return image, label


def _decode(contents: tf.Tensor) -> tf.Tensor:
    image = tf.io.decode_image(contents, channels=3, expand_animations=False, dtype=tf.uint8)
    image.set_shape([None, None, 3])
    return image


def decode_file(path: tf.Tensor, label: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """Reads and decodes one image file to uint8 RGB [H, W, 3]."""
    return _decode(tf.io.read_file(path)), label


def _ends_with(contents, n, suffix: bytes, within: int = 0) -> tf.Tensor:
    """Whether ``suffix`` ends the file, or ends within its last ``within`` bytes."""
    k = len(suffix)
    found = [tf.equal(tf.strings.substr(contents, tf.maximum(n - k - i, 0), k), suffix)
             for i in range(within + 1)]
    return tf.logical_and(n >= k, tf.reduce_any(tf.stack(found)))


def image_file_problem(contents: tf.Tensor) -> tf.Tensor:
    """Why the bytes of an image file cannot be used, or "" when they look whole.

    Cheap checks on the bytes already read (no decode): empty, not JPEG / PNG / GIF / BMP,
    or cut short (no end-of-image marker of JPEG, PNG's IEND chunk, GIF's trailer, or
    fewer bytes than BMP's header declares)."""
    n = tf.strings.length(contents)
    head = lambda k: tf.strings.substr(contents, 0, k)  # noqa: E731
    jpeg = tf.equal(head(3), b"\xff\xd8\xff")
    png = tf.equal(head(8), b"\x89PNG\r\n\x1a\n")
    gif = tf.equal(head(4), b"GIF8")
    bmp = tf.equal(head(2), b"BM")
    size_bytes = tf.cast(tf.io.decode_raw(tf.strings.substr(
        tf.strings.join([contents, b"\0" * 6]), 2, 4), tf.uint8), tf.int64)
    bmp_size = tf.reduce_sum(size_bytes * tf.constant([1, 256, 65536, 16777216], tf.int64))
    checks = [
        (tf.equal(n, 0), "empty file"),
        (tf.logical_not(jpeg | png | gif | bmp), "not a JPEG, PNG, GIF or BMP image"),
        (jpeg & tf.logical_not(_ends_with(contents, n, b"\xff\xd9", within=64)),
         "truncated JPEG (no end-of-image marker)"),
        (png & tf.logical_not(_ends_with(contents, n, b"IEND\xaeB`\x82", within=64)),
         "truncated PNG (no IEND chunk)"),
        (gif & tf.logical_not(_ends_with(contents, n, b";", within=64)),
         "truncated GIF (no trailer)"),
        (bmp & (tf.cast(n, tf.int64) < bmp_size),
         "truncated BMP (shorter than its header says)"),
    ]
    problem = tf.constant("")
    for failed, reason in reversed(checks):  # the first failing check wins
        problem = tf.where(failed, reason, problem)
    return problem


class TFDSSource(Source):
    """A TFDS image-classification dataset, read offline from ``data_dir``."""

    def __init__(self, name: str, data_dir: Optional[str] = None):
        import tensorflow_datasets as tfds  # imported here: it is slow to import

        self._tfds = tfds
        try:
            self.builder = tfds.builder(name, data_dir=data_dir)
        except tfds.core.registered.DatasetNotFoundError as e:
            raise ValueError(
                f"unknown dataset {name!r}: use {BUILTIN!r} (built in), {FOLDER!r} (an image "
                "folder given by --data_dir) or a TFDS name such as 'cifar10', 'stl10', "
                "'imagenet2012', 'imagenet2012_subset/1pct'.") from e
        features = self.builder.info.features
        if self.builder.info.supervised_keys is None or "label" not in features:
            raise ValueError(
                f"TFDS dataset {name!r} is not an image-classification dataset (it has no "
                f"(image, label) supervised keys; its features are {list(features)}).")
        label = features["label"]
        splits = tuple(self.builder.info.splits) or ("train", "validation", "test")
        self.info = SourceInfo(name, int(label.num_classes), splits)

    def known_num_examples(self, split):
        splits = self.builder.info.splits
        return splits[split].num_examples if split in splits else None

    def read(self, split, input_context=None, shuffle_files=False):
        read_config = self._tfds.ReadConfig(
            input_context=input_context, interleave_cycle_length=16,
            interleave_block_length=1)
        try:
            ds = self.builder.as_dataset(split=split, as_supervised=True,
                                         shuffle_files=shuffle_files, read_config=read_config)
        except AssertionError as e:  # TFDS's way of saying "not downloaded and prepared"
            raise ValueError(
                f"TFDS dataset {self.info.name!r} is not prepared in data_dir "
                f"{self.builder.data_dir!r}; simclr_tf never downloads at run time. Prepare it "
                f"once on a machine with network access: `tfds build {self.info.name} "
                "--data_dir=DIR` (ImageNet needs its tar files in DIR/downloads/manual), "
                "then pass --data_dir=DIR.") from e
        except ValueError as e:
            raise ValueError(f"cannot read split {split!r} of TFDS dataset "
                             f"{self.info.name!r}: {e}") from e
        return ds.map(_to_rgb_uint8, num_parallel_calls=tf.data.AUTOTUNE)


def _to_rgb_uint8(image, label):
    if image.shape.rank == 3 and image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    return tf.image.convert_image_dtype(image, tf.uint8), tf.cast(label, tf.int32)


def get_source(dataset: str, data_dir: Optional[str] = None, seed: int = 0,
               builtin_sizes: Optional[Dict[str, int]] = None) -> Source:
    """The source for a ``--dataset`` value: the built-in set, ``folder`` or a TFDS name."""
    if not dataset:
        raise ValueError(f"dataset={dataset!r}: give {BUILTIN!r}, {FOLDER!r} or a TFDS name.")
    if dataset == BUILTIN:
        return BuiltinSource(seed=seed, sizes=builtin_sizes)
    if dataset == FOLDER:
        return FolderSource(data_dir, seed=seed)
    return TFDSSource(dataset, data_dir)


def _pretrain_map(image_size, strength, impl, xla):
    """Two views per example, stacked on channels; with ``xla`` the views leave before their
    colour distortion, with its draws, for ``augment.batch_distort_colors`` after batching."""
    def fn(image, label, seed=None):
        seeds = (None, None) if seed is None else tf.unstack(
            tf.random.experimental.stateless_split(seed, 2))
        if not xla:
            views = [augment.preprocess_for_pretrain(image, image_size, strength, impl, seed=s)
                     for s in seeds]
            return tf.concat(views, axis=-1), label
        views, draws = zip(*[augment.pretrain_view_and_draws(image, image_size, strength,
                                                             impl, seed=s) for s in seeds])
        return tf.concat(views, axis=-1), label, augment.ColorDraws(
            *(tf.stack(d) for d in zip(*draws)))
    return fn


def _distort_batch(names):
    def fn(images, labels, draws):
        return augment.batch_distort_colors(images, draws, names), labels
    return fn


def build_dataset(source: Source, split: str, mode: str, global_batch_size: int,
                  image_size: int, input_context: Optional[tf.distribute.InputContext] = None,
                  color_jitter_strength: float = 1.0, color_jitter_impl: str = "v2",
                  cache: bool = False, seed: Optional[int] = None,
                  shuffle_buffer: Optional[int] = None,
                  jit_augment: bool = True) -> tf.data.Dataset:
    """A pipeline of per-replica batches ``(images, labels)``.

    Args:
      source: where the examples come from.
      split: the split to read.
      mode: ``pretrain`` (two augmented views stacked on channels: [b, S, S, 6]),
        ``finetune`` (crop + flip: [b, S, S, 3]) or ``eval`` (centre crop: [b, S, S, 3]).
        Training modes shuffle, repeat forever and drop the last partial batch; ``eval``
        reads the split once and keeps it.
      global_batch_size: the batch over all replicas; this pipeline yields its share.
      image_size: S.
      input_context: from ``strategy.distribute_datasets_from_function``.
      color_jitter_strength, color_jitter_impl: the colour distortion (pretrain only).
      cache: cache the decoded images (before shuffling and augmentation).
      seed: makes the shuffle and the augmentation a function of (seed, input pipeline,
        example position) when given: a rerun sees the same batches.
      shuffle_buffer: defaults to the original's per-replica batch x (50 at <= 32 px else 10).
      jit_augment: the colour distortion of each batch in one XLA computation
        (``augment.batch_distort_colors``; pretrain only) instead of TF's kernels per view.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not supported; use one of {MODES}.")
    num_replicas = input_context.num_replicas_in_sync if input_context else 1
    training = mode != "eval"
    check_batch_divides(global_batch_size, num_replicas,
                        "train_batch_size" if training else "eval_batch_size")
    batch = global_batch_size // num_replicas
    ds = source.read(split, input_context, shuffle_files=training)
    if cache:
        ds = ds.cache()
    if training:
        buffer = shuffle_buffer or batch * (50 if image_size <= 32 else 10)
        ds = ds.shuffle(buffer, seed=seed).repeat()
    if mode == "pretrain":
        fn = _pretrain_map(image_size, color_jitter_strength, color_jitter_impl, jit_augment)
    elif mode == "finetune":
        fn = lambda im, lb, seed=None: (  # noqa: E731
            augment.preprocess_for_finetune(im, image_size, seed=seed), lb)
    else:
        fn = lambda im, lb: (augment.preprocess_for_eval(im, image_size), lb)  # noqa: E731
    if training and seed is not None:
        if input_context is not None:  # each input pipeline draws its own augmentations
            seed = seed * 1009 + input_context.input_pipeline_id
        ds = ds.enumerate().map(
            lambda i, ex: fn(*ex, seed=tf.stack([tf.cast(seed, tf.int64), i])),
            num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch, drop_remainder=training)
    if mode == "pretrain" and jit_augment:
        names = augment.jitter_ops(color_jitter_strength, color_jitter_impl)
        ds = ds.map(_distort_batch(names), num_parallel_calls=tf.data.AUTOTUNE)
    if training:
        options = tf.data.Options()
        options.deterministic = seed is not None
        ds = ds.with_options(options)
    return ds.prefetch(tf.data.AUTOTUNE)


def check_batch_divides(global_batch_size: int, num_replicas: int, flag: str):
    """A clear error when a global batch does not split evenly across replicas."""
    if global_batch_size < 1 or global_batch_size % num_replicas:
        nearest = max(num_replicas, global_batch_size // num_replicas * num_replicas)
        raise ValueError(
            f"--{flag}={global_batch_size} must be a positive multiple of the number of "
            f"replicas ({num_replicas}), e.g. {nearest}.")


def class_names(source: Source) -> Sequence[str]:
    """Human-readable class names when the source has them, else the class indices."""
    if isinstance(source, FolderSource):
        return source.class_names
    if isinstance(source, BuiltinSource):
        return shapes.CLASS_NAMES
    return [str(i) for i in range(source.info.num_classes)]
