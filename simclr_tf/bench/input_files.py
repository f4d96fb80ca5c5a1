"""``simclr-bench --parts=input_files``: the pretraining input pipeline from JPEG files.

It writes real-sized JPEGs (500 x 375 by default, ~80 kB each at quality 90 with 4:2:0 chroma,
like ImageNet's photos) as files and as TFRecord shards of encoded images (TFDS's form), then
times two pipelines on each, interleaved and repeated (views/s, min / median / max):

- ``original``: the original's way: read, decode the whole image, turn it to float, then per
  view crop + bicubic resize, flip and colour distortion on TF's kernels;
- ``ours``: read, draw both views' crop windows from the JPEG header, decode only the box
  holding them (``file_views``), crop and resize in uint8 -> float per view, flip, and the
  colour distortion of each batch in one XLA computation (``augment.batch_distort_colors``).

Both are the training input pipeline itself (``data_lib.build_dataset``, pretraining mode, with
``window_decode`` and ``jit_augment`` on or off), from a source that reads in parallel, with
``AUTOTUNE`` and prefetch; the views of the two are equal for the same seeds. It also times
the stages of one 224-px view (read, decode, crop + resize, colour) one file at a time.
"""

import os
import statistics
import tempfile
import time
from typing import Callable, Dict, List

import tensorflow as tf

from simclr_tf.data import augment, file_views, sources
from simclr_tf.data import pipeline as data_lib

SHARDS = 4


def write_jpegs(directory: str, count: int, height: int, width: int) -> List[str]:
    """``count`` JPEGs of smooth random scenes with sensor-like noise; their paths."""
    paths = []
    for i in range(count):
        coarse = tf.random.stateless_uniform([1, 12, 16, 3], seed=[i, 1])
        scene = tf.image.resize(coarse, [height, width], method="bicubic")[0]
        noise = tf.random.stateless_normal([height, width, 3], seed=[i, 2], stddev=0.05)
        pixels = tf.cast(tf.clip_by_value(scene + noise, 0.0, 1.0) * 255.0, tf.uint8)
        path = os.path.join(directory, f"{i:05d}.jpg")
        tf.io.write_file(path, tf.io.encode_jpeg(pixels, quality=90))
        paths.append(path)
    return paths


def write_records(directory: str, paths: List[str]) -> List[str]:
    """The files' bytes as TFRecord shards of ``tf.train.Example`` (``image``, ``label``)."""
    shards = [os.path.join(directory, f"train.tfrecord-{k:05d}") for k in range(SHARDS)]
    writers = [tf.io.TFRecordWriter(s) for s in shards]
    for i, path in enumerate(paths):
        feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[tf.io.read_file(path).numpy()])),
            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 10]))}
        writers[i % SHARDS].write(tf.train.Example(features=tf.train.Features(
            feature=feature)).SerializeToString())
    for writer in writers:
        writer.close()
    return shards


class EncodedImages(sources.Source):
    """The written JPEGs as a source of (bytes, label), from the files or the records,
    read in parallel; ``read`` decodes them whole (what TFDS's default decoding does)."""

    reads_encoded = True

    def __init__(self, kind: str, paths: List[str], shards: List[str]):
        self.kind, self.paths, self.shards = kind, paths, shards
        self.info = sources.SourceInfo(f"bench_jpeg_{kind}", 10, ("train",))

    def read_encoded(self, split, input_context=None, shuffle_files=False):
        labels = lambda i: tf.cast(i % 10, tf.int32)  # noqa: E731
        if self.kind == "files":
            return tf.data.Dataset.from_tensor_slices(self.paths).enumerate().map(
                lambda i, p: (tf.io.read_file(p), labels(i)),
                num_parallel_calls=tf.data.AUTOTUNE)
        spec = {"image": tf.io.FixedLenFeature([], tf.string),
                "label": tf.io.FixedLenFeature([], tf.int64)}
        return tf.data.TFRecordDataset(self.shards, num_parallel_reads=tf.data.AUTOTUNE).map(
            lambda r: tf.io.parse_single_example(r, spec), num_parallel_calls=tf.data.AUTOTUNE
        ).map(lambda ex: (ex["image"], tf.cast(ex["label"], tf.int32)))

    def read(self, split, input_context=None, shuffle_files=False):
        return self.read_encoded(split).map(
            lambda contents, label: (file_views.decode_whole(contents), label),
            num_parallel_calls=tf.data.AUTOTUNE)


def pipeline(source: EncodedImages, way: str, cfg) -> tf.data.Dataset:
    """The training input pipeline (``data_lib.build_dataset``, pretraining) of ``way``:
    ``ours`` (the default: the crops' box decoded, colours in XLA) or ``original`` (whole
    images decoded, TF's colour kernels)."""
    ours = way == "ours"
    return data_lib.build_dataset(
        source, "train", "pretrain", cfg.train_batch_size, cfg.image_size,
        color_jitter_strength=cfg.color_jitter_strength,
        color_jitter_impl=cfg.color_jitter_impl, seed=cfg.seed, jit_augment=ours,
        window_decode=ours)


def views_per_second(ds: tf.data.Dataset, seconds: float) -> float:
    iterator = iter(ds)
    for _ in range(3):  # warm-up: tracing, XLA compilation, the pipeline filling
        next(iterator)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        count += 2 * int(next(iterator)[0].shape[0])
    return count / (time.perf_counter() - start)


def _per_call_ms(fn: Callable, inputs: List, runs: int = 3) -> float:
    fn(inputs[0])  # trace
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for x in inputs:
            fn(x)
        times.append((time.perf_counter() - start) / len(inputs))
    return 1e3 * statistics.median(times)


def stage_times(paths: List[str], image_size: int, strength: float) -> Dict[str, float]:
    """Milliseconds per file of each stage of one view, one file at a time."""
    names = augment.jitter_ops(strength, "v2")
    contents = [tf.io.read_file(p) for p in paths]
    images = [file_views.decode_whole(c) for c in contents]
    views = [augment.crop_and_resize(augment.to_float(x), image_size, [1, 2]) for x in images]
    draws = augment.ColorDraws(tf.constant([0.3, 0.3, 0.3, 0.05]), tf.range(4),
                               tf.constant(True), tf.constant(False))

    def window(c):
        shape = file_views.image_shape(c)
        return file_views.union_box([augment.crop_window(shape, [1, 2])], shape)

    stages = {
        "read": (lambda p: tf.io.read_file(p), paths),
        "decode_whole": (tf.function(file_views.decode_whole), contents),
        "decode_window": (tf.function(lambda c: file_views.decode_box(c, window(c))), contents),
        "float_crop_resize": (tf.function(lambda x: augment.crop_and_resize(
            augment.to_float(x), image_size, [1, 2])), images),
        "colour_tf_kernels": (tf.function(lambda v: augment.distort_colors(v, draws, names)),
                              views),
        "colour_xla_per_view": (lambda v: augment.batch_distort_colors(
            v[tf.newaxis], augment.ColorDraws(*(tf.reshape(d, [1, 1, *tf.shape(d)])
                                                for d in draws)), names), views),
    }
    return {f"input_files_stage_{k}_ms": _per_call_ms(fn, xs) for k, (fn, xs) in stages.items()}


def run(cfg, options, report: Callable[[str], None]) -> Dict[str, float]:
    """The figures of the module doc, keyed ``input_files_*``."""
    size, strength = cfg.image_size, cfg.color_jitter_strength
    result: Dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="simclr_bench_jpegs_") as tmp:
        report(f"writing {options.file_images} JPEGs of {options.file_width}x"
               f"{options.file_height} and their TFRecord shards ...")
        paths = write_jpegs(tmp, options.file_images, options.file_height, options.file_width)
        shards = write_records(tmp, paths)
        result["input_files_mean_kib"] = sum(os.path.getsize(p) for p in paths) / len(
            paths) / 1024
        speeds: Dict[str, List[float]] = {}
        for repeat in range(options.file_repeats):
            for kind in ("files", "records"):
                for way in ("original", "ours"):
                    report(f"input from {kind}, {way}'s way, {size} px "
                           f"({repeat + 1}/{options.file_repeats}) ...")
                    ds = pipeline(EncodedImages(kind, paths, shards), way, cfg)
                    speeds.setdefault(f"{kind}_{way}", []).append(
                        views_per_second(ds, options.file_seconds))
        for key, values in speeds.items():
            result[f"input_files_{key}_views_per_sec"] = statistics.median(values)
            result[f"input_files_{key}_min"], result[f"input_files_{key}_max"] = (
                min(values), max(values))
        for kind in ("files", "records"):
            ratios = [o / r for o, r in zip(speeds[f"{kind}_ours"], speeds[f"{kind}_original"])]
            result[f"input_files_{kind}_speedup"] = statistics.median(ratios)
            result[f"input_files_{kind}_speedup_min"] = min(ratios)
            result[f"input_files_{kind}_speedup_max"] = max(ratios)
        report("timing the stages of one view ...")
        result.update(stage_times(paths[:16], size, strength))
    return result


def format_rows(result: Dict[str, float]) -> List[str]:
    """Table lines for the figures ``run`` returned (none when it did not run)."""
    if "input_files_files_speedup" not in result:
        return []
    lines = [f"input from JPEG files ({result['input_files_mean_kib']:.0f} KiB each), views/s "
             "median (min-max):"]
    for kind in ("files", "records"):
        for way in ("original", "ours"):
            key, label = f"input_files_{kind}_{way}", f"{way}'s way"
            lines.append(f"  {kind:<8} {label:<16} {result[key + '_views_per_sec']:>9.1f}"
                         f" ({result[key + '_min']:.1f}-{result[key + '_max']:.1f})")
        key = f"input_files_{kind}_speedup"
        lines.append(f"  {kind:<8} {'speed-up':<16} {result[key]:>9.2f}"
                     f" ({result[key + '_min']:.2f}-{result[key + '_max']:.2f})")
    stages = [k for k in result if k.startswith("input_files_stage_")]
    lines.append("one view's stages, ms per file: " + ", ".join(
        f"{k[len('input_files_stage_'):-3]} {result[k]:.2f}" for k in stages))
    return lines
