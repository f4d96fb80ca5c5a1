"""The image-folder source (``--dataset=folder --data_dir=D``) and its broken-file accounting.

Layouts (each file found by its extension, at any depth):
- ``D/<class>/...``: labelled images, one sub-folder per class; a seeded ``holdout_fraction``
  of each class is held out as ``validation``.
- ``D/train/<class>/...`` with ``D/val/`` (or ``validation/``, ``test/``): the ImageNet
  layout. The eval folder answers to its own name and to ``validation`` (and ``val``).
- images directly in ``D`` (a flat folder, or any tree with ``folder_labels=False``):
  unlabelled images (label -1) in one ``train`` split, for pretraining.
A file is broken when TF's decoder cannot read it (or it is empty or of no image format):
it is skipped, counted (``skipped``) and the first ``MAX_NAMED_SKIPS`` named.
"""

import collections
import os
import sys
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from simclr_tf.data import sources

NAME = "folder"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
EVAL_FOLDER_NAMES = ("val", "validation", "test")
# The split names each eval folder also answers to (the default --eval_split is validation).
ALIASES = {"validation": ("validation", "val", "test"), "val": ("val", "validation")}
MAX_NAMED_SKIPS = 5  # broken files named on the console; all are counted
HISTORY = 16  # names carried with each file, to name the files the decoder dropped before it
_LAYOUT = ("one sub-folder of images per class (D/<class>/*.jpg), the ImageNet layout "
           "(D/train/<class>/, D/val/<class>/), or images directly in D (unlabelled)")


def _visible(names: List[str]) -> List[str]:
    """Names not starting with a dot: Jupyter's .ipynb_checkpoints, macOS's .DS_Store and
    ._* files, and version-control folders are no images or classes."""
    return sorted(n for n in names if not n.startswith("."))


def _list_images(folder: str) -> Tuple[List[str], collections.Counter]:
    """Image files under ``folder`` at any depth (sorted), and the other files by extension."""
    files, other = [], collections.Counter()
    for name in _visible(tf.io.gfile.listdir(folder)):
        path = os.path.join(folder, name.rstrip("/"))
        # Names with an image extension are taken as files without asking (on GCS every
        # isdir is a request: a folder of 100,000 images would start slowly).
        if name.lower().endswith(IMAGE_EXTENSIONS) and not name.endswith("/"):
            files.append(path)
        elif tf.io.gfile.isdir(path):
            more, more_other = _list_images(path)
            files += more
            other += more_other
        else:
            other[os.path.splitext(name)[1].lower() or "(no extension)"] += 1
    return files, other


def _subfolders(root: str) -> List[str]:
    return [n.rstrip("/") for n in _visible(tf.io.gfile.listdir(root))
            if tf.io.gfile.isdir(os.path.join(root, n.rstrip("/")))]


def _has_images(root: str) -> bool:
    return any(n.lower().endswith(IMAGE_EXTENSIONS)
               for n in _visible(tf.io.gfile.listdir(root)))


def _check_data_dir(data_dir: Optional[str]):
    if not data_dir:
        raise ValueError(f"--data_dir is required with --dataset=folder: a folder with {_LAYOUT}.")
    if not tf.io.gfile.exists(data_dir):
        raise ValueError(f"data_dir {data_dir!r} does not exist; it must be a folder with "
                         f"{_LAYOUT}.")
    if not tf.io.gfile.isdir(data_dir):
        raise ValueError(f"data_dir {data_dir!r} is a file, not a folder; it must be a folder "
                         f"with {_LAYOUT}.")


class FolderSource(sources.InMemorySource):
    """Images in a folder (see the module's docstring for the layouts).

    Args:
      data_dir: the folder.
      holdout_fraction: the share of each class held out as ``validation`` when the folder
        has no ``train/`` sub-folder.
      seed: seeds the held-out split.
      folder_labels: take the sub-folder names as classes; False reads every image under
        ``data_dir`` as unlabelled, whatever its folders are called.
    """

    def __init__(self, data_dir: Optional[str], holdout_fraction: float = 0.1, seed: int = 0,
                 folder_labels: bool = True):
        _check_data_dir(data_dir)
        if not 0.0 < holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction={holdout_fraction} must be in (0, 1).")
        self.data_dir = data_dir
        self._skipped = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_files")
        self._seen = tf.lookup.experimental.MutableHashTable(tf.string, tf.int64, 0)
        subdirs = _subfolders(data_dir)
        if "train" in subdirs and not _has_images(data_dir):
            files = {name: self._scan(os.path.join(data_dir, name), folder_labels)
                     for name in ["train"] + [d for d in EVAL_FOLDER_NAMES if d in subdirs]}
            self._check_same_labelling(files)
        else:
            items = self._scan(data_dir, folder_labels)
            files = ({"train": items} if items[0][0] is None
                     else self._holdout(items, holdout_fraction, seed))
        self._class_names = sorted({c for split in files.values() for c, _ in split} - {None})
        index = {c: i for i, c in enumerate(self._class_names)}
        self._examples = {
            split: (np.array([p for _, p in items], dtype=object),
                    np.array([index.get(c, sources.UNLABELLED) for c, _ in items], np.int32))
            for split, items in files.items()}
        self.info = sources.SourceInfo(NAME, len(self._class_names), tuple(files))

    @property
    def class_names(self) -> List[str]:
        """The class sub-folder names, in label order."""
        return self._class_names

    def split_name(self, name: str) -> str:
        for alias in ALIASES.get(name, ()):
            if alias in self._examples:
                return alias
        return name

    def _columns(self, name):
        return self._examples[name]

    @staticmethod
    def _scan(root: str, folder_labels: bool) -> List[Tuple[Optional[str], str]]:
        """(class or None, path) of every image under ``root``."""
        classes = _subfolders(root)
        labelled = folder_labels and classes and not _has_images(root)
        items, skipped = [], collections.Counter()
        for c in classes if labelled else [None]:
            files, other = _list_images(os.path.join(root, c) if c else root)
            skipped += other
            items += [(c, f) for f in files]
        if skipped:  # e.g. a phone's .heic photos and .mov videos: named by kind
            kinds = ", ".join(f"{ext}: {n}" for ext, n in skipped.most_common())
            logging.warning("Skipped %d files under %s that are no images this reads (%s); "
                            "accepted: %s.", sum(skipped.values()), root, kinds,
                            " ".join(IMAGE_EXTENSIONS))
        if not items:
            where = f"class folders {classes[:5]}" if classes else "no sub-folders"
            raise ValueError(f"data_dir {root!r} has {where} but no images (accepted "
                             f"extensions: {IMAGE_EXTENSIONS}); it must be a folder with "
                             f"{_LAYOUT}.")
        return items

    @staticmethod
    def _check_same_labelling(files: Dict[str, List[Tuple[Optional[str], str]]]):
        kinds = {name: items[0][0] is not None for name, items in files.items()}
        if len(set(kinds.values())) > 1:
            raise ValueError(
                "the split folders disagree: " + ", ".join(
                    f"{n}/ {'has class sub-folders' if k else 'holds unlabelled images'}"
                    for n, k in kinds.items()) + "; give each one sub-folder per class, or "
                "images without class folders in all of them.")

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

    def file_names(self, split: str) -> np.ndarray:
        """The paths of a split's images, relative to ``data_dir``."""
        paths = self.examples(split)[0]
        return np.array([os.path.relpath(p, self.data_dir) for p in paths], dtype=object)

    def _to_images(self, ds, shuffle):
        if shuffle:
            ds = ds.shuffle(max(1, int(ds.cardinality())), reshuffle_each_iteration=True)
        # A file can fail in TF's decoder, an error that only ignore_errors can drop. To count
        # and name it, each file carries its position and the names of the HISTORY files
        # before it; after the drop, a gap in the positions names the files that were dropped
        # (an end marker finds one at the end).
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
        """How many distinct files were skipped as broken so far (empty, not an image, or
        failing in TF's decoder); a file met again in a later epoch is not counted again."""
        return int(self._skipped.numpy())

    def _name_skipped(self, count, names, problem):
        """Counts the ``count`` files just skipped (``names``: the last of them) that were not
        skipped before, in an earlier epoch; names them while fewer than MAX_NAMED_SKIPS
        were."""
        names = tf.reshape(names, [-1])
        first_time = tf.reshape(tf.equal(self._seen.lookup(names), 0), [-1])
        new_names = tf.boolean_mask(names, first_time)
        with tf.control_dependencies([self._seen.insert(names, tf.ones_like(names, tf.int64))]):
            unnamed = count - tf.size(names, out_type=tf.int64)  # beyond the names carried
            new = tf.size(new_names, out_type=tf.int64) + unnamed
            total = self._skipped.assign_add(new)

        def name_them():
            tf.print("simclr_tf: skipping", tf.strings.reduce_join(new_names, separator=", "),
                     "-", problem, output_stream=sys.stderr)
            return tf.constant(True)

        return tf.cond(tf.logical_and(new > 0, total - new < MAX_NAMED_SKIPS), name_them,
                       lambda: tf.constant(False))

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
            dropped, history[HISTORY - tf.minimum(dropped, HISTORY):],
            "TF could not decode it (truncated or corrupt)"), lambda: tf.constant(False))
        with tf.control_dependencies([named]):
            return position, (image, label, tf.identity(ok))


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


def _head(contents: tf.Tensor, size: int = 21) -> tf.Tensor:
    """The first ``size`` bytes of ``contents``, zeros past its end (substr at a position
    past the end raises)."""
    return tf.strings.join([tf.strings.substr(contents, 0, size), b"\0" * size])


def _is_webp(contents: tf.Tensor) -> tf.Tensor:
    head = _head(contents)
    return (tf.equal(tf.strings.substr(head, 0, 4), b"RIFF")
            & tf.equal(tf.strings.substr(head, 8, 4), b"WEBP"))


def _decode(contents: tf.Tensor) -> tf.Tensor:
    # TF decodes a WebP only at its own channel count (RGB or RGBA; the alpha is dropped,
    # as a PNG's is). tf.io.decode_webp is never used: an animated WebP crashed the
    # process in it (heap corruption), where decode_image raises (and image_file_problem
    # names such files before any decoder sees them).
    image = tf.cond(
        _is_webp(contents),
        lambda: tf.io.decode_image(contents, channels=0, expand_animations=False,
                                   dtype=tf.uint8)[..., :3],
        lambda: tf.io.decode_image(contents, channels=3, expand_animations=False,
                                   dtype=tf.uint8))
    image.set_shape([None, None, 3])
    return image


def decode_file(path: tf.Tensor, label: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """Reads and decodes one image file to uint8 RGB [H, W, 3]."""
    return _decode(tf.io.read_file(path)), label


def image_file_problem(contents: tf.Tensor) -> tf.Tensor:
    """Why the bytes of a file are no image at all, or "" when they may be one.

    Only what is certain without decoding: an empty file, one that does not start like a
    JPEG, PNG, GIF, BMP or WebP, or an animated WebP (TF cannot decode those; an animated
    GIF gives its first frame). Whether an image is whole is the decoder's call: bytes after
    a JPEG's end-of-image marker (phones write them) decode fine, a truncated file does
    not."""
    head = lambda k: tf.strings.substr(contents, 0, k)  # noqa: E731
    webp = _is_webp(contents)
    known = (tf.equal(head(3), b"\xff\xd8\xff") | tf.equal(head(8), b"\x89PNG\r\n\x1a\n")
             | tf.equal(head(4), b"GIF8") | tf.equal(head(2), b"BM") | webp)
    # An extended WebP (VP8X chunk at byte 12) flags an animation in bit 1 of byte 20.
    padded = _head(contents)
    flags = tf.io.decode_raw(tf.strings.substr(padded, 20, 1), tf.uint8)[0]
    animated = (webp & tf.equal(tf.strings.substr(padded, 12, 4), b"VP8X")
                & tf.not_equal(tf.bitwise.bitwise_and(flags, 2), 0))
    return tf.where(
        tf.equal(tf.strings.length(contents), 0), "empty file",
        tf.where(animated, "an animated WebP (TF cannot decode these: save its first frame "
                           "as PNG or JPEG)",
                 tf.where(known, "", "not a JPEG, PNG, GIF, BMP or WebP image")))
