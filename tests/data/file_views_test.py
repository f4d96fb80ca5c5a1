"""Views from encoded files (file_views.py): the very views of the decoded-image path."""

import numpy as np
import pytest
import tensorflow as tf

import simclr_tf  # noqa: F401
from simclr_tf.data import augment, file_views


def _photo(height, width, seed=0):
    """A smooth scene with noise: JPEG's chroma subsampling matters on it."""
    coarse = tf.random.stateless_uniform([1, 6, 8, 3], seed=[seed, 1])
    scene = tf.image.resize(coarse, [height, width], method="bicubic")[0]
    noise = tf.random.stateless_normal([height, width, 3], seed=[seed, 2], stddev=0.08)
    return tf.cast(tf.clip_by_value(scene + noise, 0.0, 1.0) * 255.0, tf.uint8)


ENCODINGS = {
    "jpeg_420": lambda x: tf.io.encode_jpeg(x, quality=90),  # chroma at half resolution
    "jpeg_444": lambda x: tf.io.encode_jpeg(x, quality=90, chroma_downsampling=False),
    "png": tf.io.encode_png,  # decoded whole
}


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_views_from_the_file_equal_the_decoded_images_views(encoding):
    contents = ENCODINGS[encoding](_photo(47, 61))
    image = file_views.decode_whole(contents)
    assert file_views.image_shape(contents).numpy().tolist() == [47, 61, 3]
    boxes = []
    for k in range(40):
        seeds = [tf.constant([k, 1], tf.int64), tf.constant([k, 2], tf.int64)]
        views, draws = file_views.pretrain_views_and_draws(contents, 16, 1.0, "v2", seeds)
        for view, draw, seed in zip(views, draws, seeds):
            want, want_draw = augment.pretrain_view_and_draws(image, 16, 1.0, "v2", seed)
            np.testing.assert_array_equal(view.numpy(), want.numpy())
            for got, expected in zip(draw, want_draw):
                np.testing.assert_array_equal(got.numpy(), expected.numpy())
        windows = [augment.crop_window(tf.shape(image), augment.view_seeds(s)[0])
                   for s in seeds]
        box = file_views.union_box(windows, tf.shape(image)).numpy()
        for begin, size in windows:  # the box holds both windows, within the image
            assert box[0] <= begin[0] and begin[0] + size[0] <= box[0] + box[2] <= 47
            assert box[1] <= begin[1] and begin[1] + size[1] <= box[1] + box[3] <= 61
        boxes.append(box[2] * box[3])
    assert np.mean(boxes) < 0.95 * 47 * 61  # a JPEG decodes less than the whole image


def test_the_margin_is_what_makes_a_jpeg_window_exact():
    # Without it, libjpeg's chroma upsampling at the box's edge changes the outer pixels.
    contents = ENCODINGS["jpeg_420"](_photo(47, 61, seed=3))
    whole = file_views.decode_whole(contents).numpy()
    differ = 0
    for top, left in [(1, 3), (4, 5), (7, 9), (10, 13)]:
        box = tf.constant([top, left, 21, 25])
        part = file_views.decode_box(contents, box).numpy()
        differ += int((part != whole[top:top + 21, left:left + 25]).any())
    assert differ > 0
