"""Tests of the built-in `shapes` dataset: deterministic, balanced, colour-blind by design."""

import numpy as np
import pytest

from simclr_tf.data import shapes_dataset


def _nearest_centroid_accuracy(train_x, train_y, test_x, test_y):
    centroids = np.stack([train_x[train_y == k].mean(0) for k in range(shapes_dataset.NUM_CLASSES)])
    dist = ((test_x[:, None, :] - centroids[None]) ** 2).sum(-1)
    return float((dist.argmin(1) == test_y).mean())


def _colour_histograms(images):
    """A joint 4x4x4 RGB histogram per image: everything colour says, nothing of shape."""
    q = (images // 64).reshape(len(images), -1, 3).astype(int)
    codes = q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]
    return np.stack([np.bincount(c, minlength=64) for c in codes]) / codes.shape[1]


def _shape_spectra(images):
    """Translation-invariant shape features: |FFT| of the foreground mask."""
    x = images.astype(np.float32) / 255.0
    border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)
    background = np.median(border, axis=1)
    mask = (np.abs(x - background[:, None, None, :]).sum(-1) > 0.3).astype(np.float32)
    spectra = np.abs(np.fft.fft2(mask)).reshape(len(x), -1)
    return spectra / (np.linalg.norm(spectra, axis=1, keepdims=True) + 1e-6)


def test_deterministic_per_seed_and_balanced():
    a_images, a_labels = shapes_dataset.generate(200, 32, seed=3)
    b_images, b_labels = shapes_dataset.generate(200, 32, seed=3)
    c_images, _ = shapes_dataset.generate(200, 32, seed=4)
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_labels, b_labels)
    assert np.abs(a_images.astype(int) - c_images).mean() > 10
    assert a_images.shape == (200, 32, 32, 3) and a_images.dtype == np.uint8
    assert a_labels.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(a_labels), np.full(10, 20))


def test_colour_cannot_tell_the_classes_apart_but_shape_can():
    train = shapes_dataset.generate(2000, 32, seed=0)
    test = shapes_dataset.generate(500, 32, seed=1)
    colour = _nearest_centroid_accuracy(_colour_histograms(train[0]), train[1],
                                        _colour_histograms(test[0]), test[1])
    shape = _nearest_centroid_accuracy(_shape_spectra(train[0]), train[1],
                                       _shape_spectra(test[0]), test[1])
    assert colour < 0.15  # chance is 0.10
    assert shape > 0.8


def test_colours_are_independent_of_the_class():
    images, labels = shapes_dataset.generate(3000, 32, seed=5)
    mean_colour = images.reshape(len(images), -1, 3).mean(1) / 255.0
    per_class = np.stack([mean_colour[labels == k].mean(0) for k in range(10)])
    # Every class's average colour is mid-grey within sampling noise.
    assert np.abs(per_class - 0.5).max() < 0.06


def test_other_sizes_and_bad_arguments():
    images, _ = shapes_dataset.generate(20, 48, seed=0)
    assert images.shape == (20, 48, 48, 3)
    with pytest.raises(ValueError, match="image_size=8"):
        shapes_dataset.generate(10, 8)
    with pytest.raises(ValueError, match="num_examples=0"):
        shapes_dataset.generate(0)
