"""Pretraining views straight from an encoded image file: decode only what the crops need.

``augment.pretrain_view_and_draws`` takes a decoded image: the whole file is decoded, turned to
float, then each view crops a window of it. From a JPEG the windows can be drawn from the
header alone (``tf.image.extract_jpeg_shape``: the window depends only on the image's shape
and the seed), and only the smallest box holding both views' windows is decoded
(``tf.image.decode_and_crop_jpeg``: rows below the box are never decoded, columns outside it
skip the inverse DCT); each view is then cut from that box in uint8 and only its pixels are
turned to float. For the same seed the views equal those of the decoded-image path: the same
windows, and libjpeg gives a window the pixels of the full decode (``tests/data/augment_test.py``).
PNG, GIF and BMP files are decoded whole.
"""

from typing import List, Tuple

import tensorflow as tf

from simclr_tf.data import augment


def is_jpeg(contents: tf.Tensor) -> tf.Tensor:
    return tf.equal(tf.strings.substr(contents, 0, 3), b"\xff\xd8\xff")


def _jpeg_shape(contents: tf.Tensor) -> tf.Tensor:
    return tf.concat([tf.image.extract_jpeg_shape(contents)[:2], [3]], 0)


def image_shape(contents: tf.Tensor) -> tf.Tensor:
    """[H, W, 3] of an encoded image; from the header alone for a JPEG."""
    return tf.cond(is_jpeg(contents), lambda: _jpeg_shape(contents),
                   lambda: tf.shape(decode_whole(contents)))


def decode_whole(contents: tf.Tensor) -> tf.Tensor:
    image = tf.io.decode_image(contents, channels=3, expand_animations=False, dtype=tf.uint8)
    image.set_shape([None, None, 3])
    return image


# Pixels decoded around the windows: libjpeg upsamples subsampled chroma at a crop's edge
# from the edge itself, so the outermost pixels of a cropped decode may differ from the full
# decode's (seen: the last column, by up to 14 levels); the margin keeps that outside.
MARGIN = 2


def union_box(windows: List[Tuple[tf.Tensor, tf.Tensor]], shape: tf.Tensor,
              margin: int = MARGIN) -> tf.Tensor:
    """[top, left, height, width] of the smallest box holding every ``(begin, size)`` and
    ``margin`` pixels around them, within an image of ``shape``."""
    top = tf.maximum(tf.reduce_min(tf.stack([b[0] for b, _ in windows])) - margin, 0)
    left = tf.maximum(tf.reduce_min(tf.stack([b[1] for b, _ in windows])) - margin, 0)
    bottom = tf.minimum(tf.reduce_max(tf.stack([b[0] + s[0] for b, s in windows])) + margin,
                        shape[0])
    right = tf.minimum(tf.reduce_max(tf.stack([b[1] + s[1] for b, s in windows])) + margin,
                       shape[1])
    return tf.stack([top, left, bottom - top, right - left])


def decode_box(contents: tf.Tensor, box: tf.Tensor) -> tf.Tensor:
    """The uint8 pixels of ``box`` [top, left, height, width]: a JPEG decodes only that box."""
    def whole():
        return tf.slice(decode_whole(contents), tf.stack([box[0], box[1], 0]),
                        tf.stack([box[2], box[3], 3]))

    image = tf.cond(is_jpeg(contents),
                    lambda: tf.image.decode_and_crop_jpeg(contents, box, channels=3), whole)
    image.set_shape([None, None, 3])
    return image


def _resized(pixels, windows, box, image_size):
    views = []
    for begin, size in windows:
        crop = tf.slice(pixels, tf.stack([begin[0] - box[0], begin[1] - box[1], 0]), size)
        views.append(tf.image.resize(augment.to_float(crop)[tf.newaxis],
                                     [image_size, image_size], method="bicubic")[0])
    return views


def crops(contents: tf.Tensor, image_size: int, crop_seeds) -> List[tf.Tensor]:
    """``augment.crop_and_resize`` of the decoded file for each seed, [S, S, 3] float each;
    a JPEG decodes only the box that holds the windows, another format is decoded once."""
    def jpeg():
        shape = _jpeg_shape(contents)
        windows = [augment.crop_window(shape, seed) for seed in crop_seeds]
        box = union_box(windows, shape)
        pixels = tf.image.decode_and_crop_jpeg(contents, box, channels=3)
        return _resized(pixels, windows, box, image_size)

    def other():
        pixels = decode_whole(contents)
        windows = [augment.crop_window(tf.shape(pixels), seed) for seed in crop_seeds]
        return _resized(pixels, windows, tf.zeros([4], tf.int32), image_size)

    views = tf.cond(is_jpeg(contents), jpeg, other)
    return [tf.ensure_shape(v, [image_size, image_size, 3]) for v in views]


def pretrain_views_and_draws(contents: tf.Tensor, image_size: int,
                             color_jitter_strength: float = 1.0,
                             color_jitter_impl: str = "v2", seeds=(None, None)):
    """``augment.pretrain_view_and_draws`` for each view seed, from the encoded file:
    ``([view [S, S, 3] before its colours, ...], [ColorDraws, ...])``."""
    per_view = [augment.view_seeds(seed) for seed in seeds]  # (crop, flip, colour) each
    views, draws = [], []
    for image, (_, flip_seed, color_seed) in zip(
            crops(contents, image_size, [s[0] for s in per_view]), per_view):
        image = augment.random_flip(image, flip_seed)
        views.append(tf.ensure_shape(image, [image_size, image_size, 3]))
        draws.append(augment.color_draws(color_jitter_strength, color_seed, color_jitter_impl))
    return views, draws
