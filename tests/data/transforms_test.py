"""The transformations of --augmentations against NumPy references and analytic values, and
their views through the input pipeline."""

import numpy as np
import pytest
import tensorflow as tf

import simclr_tf  # noqa: F401
from simclr_tf.core import config as config_lib
from simclr_tf.data import pipeline, sources, transforms

LUMA = np.array([0.2989, 0.5870, 0.1140])


def _seed(i):
    return tf.constant([7, i], tf.int64)


def _image(h=24, w=24, seed=0):
    return np.random.default_rng(seed).uniform(size=(h, w, 3)).astype(np.float32)


@pytest.mark.parametrize("top,left,side", [(3, 5, 8), (-4, 20, 10), (0, 0, 24)])
def test_cutout_at_zeroes_the_square_inside_the_image(top, left, side):
    image = _image()
    want = image.copy()
    want[max(top, 0):max(top + side, 0), max(left, 0):max(left + side, 0)] = 0.0
    np.testing.assert_array_equal(transforms.cutout_at(image, top, left, side).numpy(), want)


def test_cutout_is_one_clipped_square_of_half_the_side():
    image = _image() + 0.1  # no zeros of its own
    sizes = set()
    for i in range(40):
        out = transforms.cutout(image, _seed(i)).numpy()
        hole = np.all(out == 0.0, axis=-1)
        rows, cols = np.nonzero(hole)
        assert hole.sum() > 0
        # The hole is a rectangle (a square clipped by the border), everything else is kept.
        assert hole.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
        np.testing.assert_array_equal(out[~hole], image[~hole])
        assert np.ptp(rows) + 1 <= 12 and np.ptp(cols) + 1 <= 12
        sizes.add((np.ptp(rows) + 1, np.ptp(cols) + 1))
        np.testing.assert_array_equal(out, transforms.cutout(image, _seed(i)).numpy())
    assert (12, 12) in sizes and len(sizes) > 1  # whole squares, and some clipped


def _numpy_sobel(image):
    gray = image.astype(np.float64) @ LUMA
    padded = np.pad(gray, 1, mode="reflect")
    ky = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], np.float64)
    h, w = gray.shape
    gy = np.zeros_like(gray)
    gx = np.zeros_like(gray)
    for i in range(h):
        for j in range(w):
            window = padded[i:i + 3, j:j + 3]
            gy[i, j] = np.sum(window * ky)
            gx[i, j] = np.sum(window * ky.T)
    magnitude = np.hypot(gx, gy)
    return np.repeat((magnitude / magnitude.max())[..., None], 3, axis=-1)


def test_sobel_matches_numpy():
    image = _image(12, 9)
    np.testing.assert_allclose(transforms.sobel(image).numpy(), _numpy_sobel(image),
                               atol=1e-5)


def test_sobel_of_a_step_edge_and_of_a_flat_image():
    image = np.zeros((8, 8, 3), np.float32)
    image[:, 4:] = 1.0
    out = transforms.sobel(image).numpy()[..., 0]
    # Only the two columns beside the edge respond, equally, at the maximum.
    np.testing.assert_allclose(out[:, 3:5], np.ones((8, 2)), atol=1e-6)
    np.testing.assert_allclose(out[:, :3], 0.0, atol=1e-6)
    np.testing.assert_allclose(out[:, 5:], 0.0, atol=1e-6)
    assert np.all(transforms.sobel(np.full((8, 8, 3), 0.3, np.float32)).numpy() == 0)


def test_noise_has_its_standard_deviation_and_is_seeded():
    image = np.full((128, 128, 3), 0.5, np.float32)
    noise = transforms.gaussian_noise(image, _seed(1)).numpy() - 0.5
    assert abs(noise.mean()) < 0.003
    assert noise.std() == pytest.approx(transforms.NOISE_STDDEV, rel=0.02)
    np.testing.assert_array_equal(transforms.gaussian_noise(image, _seed(1)).numpy() - 0.5,
                                  noise)
    assert not np.array_equal(transforms.gaussian_noise(image, _seed(2)).numpy() - 0.5, noise)


def test_rotate_is_a_quarter_turn_never_none():
    image = _image(6, 6)
    turns = []
    for i in range(30):
        out = transforms.rotate(image, _seed(i)).numpy()
        ks = [k for k in range(4) if np.array_equal(out, np.rot90(image, k))]
        assert len(ks) == 1 and ks[0] != 0
        turns.append(ks[0])
    assert set(turns) == {1, 2, 3}


def test_one_view_transforms_the_second_view_of_a_shared_crop():
    recipe = transforms.Recipe(("rotate",), one_view=True)
    views = transforms.two_views((_image(40, 32) * 255).astype(np.uint8), recipe, 16,
                                 _seed(3)).numpy()
    first, second = views[..., :3], views[..., 3:]
    assert any(np.array_equal(second, np.rot90(first, k)) for k in (1, 2, 3))


def test_both_views_transformed_differ_and_apply_in_order():
    image = _image(30, 30)
    both = transforms.two_views(image, transforms.Recipe(("crop", "sobel")), 16, _seed(4))
    first, second = both[..., :3].numpy(), both[..., 3:].numpy()
    assert not np.array_equal(first, second)
    for view in (first, second):  # sobel last: gray, with its maximum 1
        np.testing.assert_array_equal(view[..., 0], view[..., 2])
        assert view.max() == pytest.approx(1.0)


def test_the_pipeline_makes_the_recipes_views():
    images = (np.random.default_rng(0).uniform(size=(16, 20, 20, 3)) * 255).astype(np.uint8)
    source = sources.ArraySource({"train": (images, np.arange(16) % 2)}, num_classes=2)
    recipe = transforms.Recipe(("rotate",), one_view=True)
    batch, _ = next(iter(pipeline.build_dataset(source, "train", "pretrain", 8, 12, seed=1,
                                                recipe=recipe)))
    assert batch.shape == (8, 12, 12, 6)
    for pair in batch.numpy():
        assert any(np.array_equal(pair[..., 3:], np.rot90(pair[..., :3], k)) for k in (1, 2, 3))
    sobel = transforms.Recipe(("sobel",))
    batch, _ = next(iter(pipeline.build_dataset(source, "train", "finetune", 8, 12, seed=1,
                                                recipe=sobel)))
    assert batch.shape == (8, 12, 12, 3)
    np.testing.assert_array_equal(batch[..., 0], batch[..., 1])


def test_flags_are_checked_and_turn_off_the_step_blur():
    with pytest.raises(ValueError, match="'spin' is not a transformation; use .*crop, cutout"):
        config_lib.Config(model_dir="x", augmentations="crop,spin").validate()
    with pytest.raises(ValueError, match="--augment_one_view needs --augmentations"):
        config_lib.Config(model_dir="x", augment_one_view=True).validate()
    cfg = config_lib.Config(model_dir="x", augmentations="crop, blur").validate()
    assert not cfg.device_blur and config_lib.Config(model_dir="x").device_blur
    assert transforms.recipe_of(cfg).names == ("crop", "blur")
    assert transforms.recipe_of(config_lib.Config(model_dir="x")) is None
