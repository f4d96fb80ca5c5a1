"""Augmentations: shapes and ranges eagerly and in tf.data, identities, NumPy references,
crop statistics, and the per-image on-device blur."""

import numpy as np
import pytest
import tensorflow as tf

import simclr_tf  # noqa: F401
from simclr_tf import augment


def _image(h=40, w=48, seed=0):
    return tf.random.stateless_uniform([h, w, 3], seed=[seed, 7])


SEED = tf.constant([3, 4], tf.int64)


@pytest.mark.parametrize("fn,channels", [
    (lambda im: augment.preprocess_for_pretrain(im, 24, 1.0), 3),
    (lambda im: augment.preprocess_for_finetune(im, 24), 3),
    (lambda im: augment.preprocess_for_eval(im, 24), 3),
    (lambda im: augment.preprocess_for_eval(im, 40), 3),
])
def test_shapes_and_ranges_eagerly_and_in_tf_data(fn, channels):
    images = [_image(seed=i) for i in range(4)] + [
        tf.cast(_image(30, 20) * 255, tf.uint8)]
    size = 24 if fn(images[0]).shape[0] == 24 else 40
    for im in images:
        out = fn(im)
        assert out.shape == (size, size, channels) and out.dtype == tf.float32
        assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 1.0
    ds = tf.data.Dataset.from_tensor_slices(tf.stack(images[:4])).map(fn)
    for out in ds:
        assert out.shape == (size, size, channels)
        assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 1.0


def test_seeded_ops_are_deterministic_and_differ_across_seeds():
    im = _image()
    a = augment.preprocess_for_pretrain(im, 24, 1.0, seed=SEED)
    b = augment.preprocess_for_pretrain(im, 24, 1.0, seed=SEED)
    c = augment.preprocess_for_pretrain(im, 24, 1.0, seed=SEED + 1)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.allclose(a.numpy(), c.numpy())
    # The same seed inside tf.data gives the same view as eagerly.
    d = next(iter(tf.data.Dataset.from_tensors(im).map(
        lambda x: augment.preprocess_for_pretrain(x, 24, 1.0, seed=SEED))))
    np.testing.assert_allclose(d.numpy(), a.numpy(), atol=1e-6)


def test_unseeded_ops_draw_fresh_randomness():
    im = _image()
    outs = [augment.preprocess_for_pretrain(im, 24, 1.0).numpy() for _ in range(3)]
    assert not np.allclose(outs[0], outs[1]) or not np.allclose(outs[1], outs[2])


def test_colour_identities():
    im = _image()
    np.testing.assert_allclose(augment.color_jitter(im, 0.0, seed=SEED).numpy(), im.numpy())
    out = augment.random_color_jitter(im, 1.0, seed=SEED, p_jitter=0.0, p_gray=0.0)
    np.testing.assert_allclose(out.numpy(), im.numpy())
    with pytest.raises(ValueError, match="'v3'"):
        augment.color_jitter(im, 1.0, seed=SEED, impl="v3")


def test_grayscale_matches_luma_and_has_equal_channels():
    im = _image()
    gray = augment.to_grayscale(im).numpy()
    expected = im.numpy() @ np.array([0.2989, 0.587, 0.114])
    for c in range(3):
        np.testing.assert_allclose(gray[..., c], expected, atol=2e-3)
    always_gray = augment.random_color_jitter(im, 1.0, seed=SEED, p_jitter=0.0, p_gray=1.0)
    np.testing.assert_array_equal(always_gray.numpy()[..., 0], always_gray.numpy()[..., 2])


def test_brightness_v2_multiplies_and_v1_adds():
    im = tf.concat([tf.zeros([4, 4, 3]), tf.fill([4, 4, 3], 0.5)], axis=0)
    v2 = augment._ADJUST["brightness_v2"](im, 1.5).numpy()
    v1 = augment._ADJUST["brightness_v1"](im, 0.25).numpy()
    np.testing.assert_allclose(v2[:4], 0.0)  # black stays black when multiplied
    np.testing.assert_allclose(v2[4:], 0.75)
    np.testing.assert_allclose(v1, im.numpy() + 0.25)
    # Factors: v2 ~ U(max(0, 1 - 0.8 s), 1 + 0.8 s), v1 ~ U(-0.8 s, 0.8 s); s = 1.
    for impl, low, high in (("v2", 0.2, 1.8), ("v1", -0.8, 0.8)):
        b = np.array([augment._jitter_draws(1.0, [i, 1], impl)[0][0].numpy()
                      for i in range(200)])
        assert low <= b.min() < low + 0.1 and high - 0.1 < b.max() <= high


def _np_hsv(rgb):
    r, g, b = np.moveaxis(rgb, -1, 0)
    v, m = rgb.max(-1), rgb.min(-1)
    d = v - m
    s = np.where(v > 0, d / np.where(v > 0, v, 1), 0.0)
    dd = np.where(d > 0, d, 1)
    h = np.where(v == r, (g - b) / dd, np.where(v == g, 2 + (b - r) / dd, 4 + (r - g) / dd))
    return np.mod(np.where(d > 0, h / 6, 0.0), 1.0), s, v


def _np_rgb(h, s, v):
    h6 = np.mod(h, 1.0) * 6
    i = np.floor(h6).astype(int) % 6
    f = h6 - np.floor(h6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    return np.stack([np.choose(i, [row[c] for row in table]) for c in range(3)], -1)


def _np_distort(image, factors, order, jitter, gray, impl):
    """One view's colour distortion written from the HSV equations, in float64."""
    x = image.astype(np.float64)

    def brightness(x, f):
        return x * f if impl == "v2" else x + f

    def contrast(x, f):
        mean = x.mean(axis=(0, 1), keepdims=True)
        return (x - mean) * f + mean

    def saturation(x, f):
        h, s, v = _np_hsv(x)
        return _np_rgb(h, np.clip(s * f, 0, 1), v)

    def hue(x, f):
        h, s, v = _np_hsv(x)
        return _np_rgb(h + f, s, v)

    ops = [brightness, contrast, saturation, hue]
    if jitter:
        for k in order:
            x = np.clip(ops[k](x, factors[k]), 0, 1)
    if gray:
        x = np.repeat(x @ np.array([0.2989, 0.587, 0.114])[:, None], 3, axis=-1)
    return np.clip(x, 0, 1)


@pytest.mark.parametrize("impl", ["v2", "v1"])
def test_colour_distortion_matches_numpy_per_view_and_batched_in_xla(impl):
    # Two views per example on the channels, each with its own draws; the per-view TF
    # kernels and the batched XLA computation both match the NumPy reference.
    batch, views, names = 24, 2, augment.jitter_ops(1.0, impl)
    images = tf.random.stateless_uniform([batch, 10, 12, 3 * views], [5, 6])
    draws = [[augment.color_draws(1.0, [i, v], impl) for v in range(views)]
             for i in range(batch)]
    flat = [d for row in draws for d in row]
    assert {bool(d.jitter) for d in flat} == {True, False}  # the draws cover every case
    assert {bool(d.gray) for d in flat} == {True, False}
    assert len({tuple(d.order.numpy()) for d in flat}) > 10
    stacked = augment.ColorDraws(*(
        tf.stack([tf.stack([getattr(d, field) for d in row]) for row in draws])
        for field in augment.ColorDraws._fields))
    assert stacked.factors.shape == (batch, views, 4) and stacked.order.shape == (batch, views, 4)
    batched = augment.batch_distort_colors(images, stacked, names).numpy()
    for i in range(batch):
        for v in range(views):
            d = draws[i][v]
            view = images[i, ..., 3 * v:3 * v + 3]
            expected = _np_distort(view.numpy(), d.factors.numpy(), d.order.numpy(),
                                   bool(d.jitter), bool(d.gray), impl)
            per_view = augment.distort_colors(view, d, names).numpy()
            np.testing.assert_allclose(per_view, expected, atol=2e-5)
            np.testing.assert_allclose(batched[i, ..., 3 * v:3 * v + 3], expected, atol=2e-5)
    assert np.abs(batched - images.numpy()).mean() > 0.05  # the distortion did something


def test_jitter_magnitudes_follow_the_strength():
    im = _image()
    diffs = []
    for s in (0.25, 1.0):
        d = [np.abs(augment.color_jitter(im, s, seed=tf.constant([i, 9], tf.int64)).numpy()
                    - im.numpy()).mean() for i in range(20)]
        diffs.append(np.mean(d))
    assert diffs[0] < diffs[1]


def test_jitter_order_is_random():
    # Brightness then contrast differs from contrast then brightness in the v1 form; over
    # several seeds with the same op parameters both orders must appear. We check that the
    # permutation itself varies.
    orders = set()
    for i in range(30):
        order_seed = augment._seeds(tf.constant([i, 0], tf.int64), 5)[0]
        u = tf.random.stateless_uniform([4], order_seed, 0.0, 1.0)
        orders.add(tuple(tf.argsort(u).numpy()))
    assert len(orders) > 5


def test_crop_area_and_aspect_statistics():
    shape = tf.constant([64, 64, 3])
    areas, aspects = [], []
    for i in range(1500):
        _, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            shape, tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=[i, 1],
            min_object_covered=augment.CROP_MIN_OBJECT_COVERED,
            aspect_ratio_range=augment.CROP_ASPECT_RANGE, area_range=augment.CROP_AREA_RANGE,
            max_attempts=augment.CROP_MAX_ATTEMPTS, use_image_if_no_bounding_boxes=True)
        h, w = int(size[0]), int(size[1])
        areas.append(h * w / 64 ** 2)
        aspects.append(w / h)
    areas, aspects = np.array(areas), np.array(aspects)
    # min_object_covered 0.1 raises the effective minimum from 8% to 10% (rounding slack).
    assert areas.min() >= 0.09 and areas.max() <= 1.0
    assert aspects.min() >= 0.75 * 0.9 and aspects.max() <= 4 / 3 * 1.1
    # TF's sampler draws the aspect, then the crop HEIGHT uniformly between the heights of the
    # smallest and largest allowed areas (clipped to fit), so areas lean small. The same rule
    # in NumPy gives the reference distribution.
    rng = np.random.default_rng(0)
    ref = []
    while len(ref) < 20000:
        aspect = rng.uniform(0.75, 4 / 3)
        lo = int(round(np.sqrt(0.08 * 64 * 64 / aspect)))
        hi = min(int(round(np.sqrt(64 * 64 / aspect))), int((64 + 0.5 - 1e-7) / aspect), 64)
        h = rng.integers(lo, hi + 1)
        w = int(round(h * aspect))
        if w <= 64 and 0.1 <= h * w / 64 ** 2 <= 1.0:
            ref.append(h * w / 64 ** 2)
    ref = np.array(ref)
    assert abs(areas.mean() - ref.mean()) < 0.03, (areas.mean(), ref.mean())
    assert abs(np.median(areas) - np.median(ref)) < 0.05
    assert np.mean(areas < 0.3) > 0.2 and np.mean(areas > 0.8) > 0.05


def test_crop_and_resize_crops_a_region_of_the_image():
    # A horizontal ramp: any crop resized back keeps increasing left to right.
    ramp = tf.tile(tf.linspace(0.0, 1.0, 50)[tf.newaxis, :, tf.newaxis], [50, 1, 3])
    out = augment.crop_and_resize(ramp, 20, seed=SEED).numpy()
    assert out.shape == (20, 20, 3)
    assert np.all(np.diff(out[10, :, 0]) > -1e-3)
    flipped = augment.random_flip(ramp, seed=tf.constant([0, 0], tf.int64)).numpy()
    assert np.array_equal(flipped, ramp.numpy()) or np.array_equal(flipped, ramp.numpy()[:, ::-1])


def test_flip_probability_is_one_half():
    ramp = tf.tile(tf.linspace(0.0, 1.0, 8)[tf.newaxis, :, tf.newaxis], [2, 1, 3])
    flips = [float(augment.random_flip(ramp, seed=tf.constant([i, 5], tf.int64))[0, 0, 0]) > 0.5
             for i in range(400)]
    assert 0.42 < np.mean(flips) < 0.58


def test_eval_at_32_px_and_below_uses_the_whole_image():
    im = _image(32, 32)
    np.testing.assert_allclose(augment.preprocess_for_eval(im, 32).numpy(),
                               np.clip(im.numpy(), 0, 1))
    other = augment.preprocess_for_eval(_image(40, 20), 32)
    assert other.shape == (32, 32, 3)


def test_centre_crop_takes_the_central_square():
    # An image whose centre 28 x 28 region (0.875 of the short side 32) is 1, the rest 0.
    h, w = 32, 48
    side = int(round(0.875 * 32))
    top, left = (h - side + 1) // 2, (w - side + 1) // 2
    img = np.zeros([h, w, 3], np.float32)
    img[top:top + side, left:left + side] = 1.0
    out = augment.center_crop(tf.constant(img), side).numpy()
    np.testing.assert_allclose(out, 1.0, atol=1e-5)
    big = augment.preprocess_for_eval(tf.constant(img), 56).numpy()
    assert big.shape == (56, 56, 3) and big.min() > 0.99


def test_blur_kernel_size():
    assert [augment.blur_kernel_size(s) for s in (16, 32, 96, 224)] == [1, 3, 9, 23]


def _numpy_blur(image, sigma, k):
    r = k // 2
    x = np.arange(-r, r + 1)
    g = np.exp(-x ** 2 / (2 * sigma ** 2))
    g /= g.sum()
    kernel = np.outer(g, g)
    h, w, c = image.shape
    padded = np.pad(image, ((r, r), (r, r), (0, 0)))
    out = np.zeros_like(image, dtype=np.float64)
    for i in range(h):
        for j in range(w):
            out[i, j] = np.tensordot(kernel, padded[i:i + k, j:j + k], axes=([0, 1], [0, 1]))
    return out


def test_gaussian_blur_matches_numpy_per_image():
    images = tf.random.stateless_uniform([3, 12, 10, 3], seed=[1, 1])
    sigma = tf.constant([0.3, 1.0, 2.0])
    out = augment.gaussian_blur(images, sigma, 5).numpy()
    for b in range(3):
        np.testing.assert_allclose(out[b], _numpy_blur(images[b].numpy(), float(sigma[b]), 5),
                                   atol=1e-5)
    kernels = augment.gaussian_kernels(sigma, 5).numpy()
    np.testing.assert_allclose(kernels.sum(1), 1.0, rtol=1e-6)


def test_blur_preserves_a_constant_image_inside_the_border():
    images = tf.fill([2, 16, 16, 3], 0.7)
    out = augment.gaussian_blur(images, tf.constant([0.5, 2.0]), 5).numpy()
    np.testing.assert_allclose(out[:, 2:-2, 2:-2], 0.7, rtol=1e-5)
    assert out[1, 0, 0, 0] < 0.7  # zero padding darkens the border


def test_batch_random_blur_coins_and_independence():
    images = tf.tile(tf.random.stateless_uniform([1, 32, 32, 3], seed=[2, 2]), [400, 1, 1, 1])
    none = augment.batch_random_blur(images, p=0.0, seed=SEED)
    np.testing.assert_array_equal(none.numpy(), images.numpy())
    # Rebuild the draws from the same seed: one sigma in [0.1, 2] and one coin per image.
    sigma_seed, coin_seed = augment._seeds(SEED, 2)
    sigma = tf.random.stateless_uniform([400], sigma_seed, 0.1, 2.0)
    coins = tf.random.stateless_uniform([400], coin_seed, 0.0, 1.0).numpy() < 0.5
    assert 0.1 <= float(tf.reduce_min(sigma)) and float(tf.reduce_max(sigma)) <= 2.0
    assert float(tf.math.reduce_std(sigma)) > 0.4  # independent per image, not one per batch
    blurred = np.clip(augment.gaussian_blur(images, sigma, 3).numpy(), 0, 1)
    every = augment.batch_random_blur(images, p=1.0, seed=SEED).numpy()
    np.testing.assert_allclose(every, blurred, atol=1e-6)
    half = augment.batch_random_blur(images, p=0.5, seed=SEED).numpy()
    np.testing.assert_allclose(half[coins], blurred[coins], atol=1e-6)
    np.testing.assert_array_equal(half[~coins], images.numpy()[~coins])
    assert 0.42 < coins.mean() < 0.58  # binomial(400, 0.5): +-3 standard deviations
    # Identical images with a large and a small sigma come out different.
    big, small = int(np.argmax(sigma)), int(np.argmin(sigma))
    assert np.abs(every[big] - every[small]).max() > 1e-2


def test_batch_random_blur_in_a_function_with_unknown_batch_and_two_replicas(two_replicas):
    fn = tf.function(lambda x: augment.batch_random_blur(x, p=1.0),
                     input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)])
    images = tf.random.stateless_uniform([5, 32, 32, 3], seed=[3, 3])
    assert fn(images).shape == (5, 32, 32, 3)
    dist = two_replicas.experimental_distribute_values_from_function(
        lambda ctx: images[:2] if ctx.replica_id_in_sync_group == 0 else images[2:4])
    out = two_replicas.run(tf.function(lambda x: augment.batch_random_blur(x, p=1.0)),
                           args=(dist,))
    parts = two_replicas.experimental_local_results(out)
    assert [p.shape[0] for p in parts] == [2, 2]
    assert not np.allclose(parts[0].numpy(), images[:2].numpy())


def test_strength_zero_turns_off_the_whole_colour_step_grayscale_included():
    # The original skips the colour step at strength 0: the "no colour distortion" ablation.
    draws = [augment.color_draws(s, seed=tf.constant([i, 3], tf.int64))
             for s in (0.0, 0.5) for i in range(40)]
    assert not any(bool(d.gray) for d in draws[:40])
    assert 2 <= sum(bool(d.gray) for d in draws[40:]) <= 16  # p = 0.2 at any other strength
    image = tf.constant(np.random.default_rng(0).uniform(size=[20, 20, 3]), tf.float32)
    for i in range(10):
        seed = tf.constant([i, 4], tf.int64)
        view = augment.preprocess_for_pretrain(image, 16, 0.0, seed=seed)
        crop_seed, flip_seed, _ = augment._seeds(seed, 3)
        crop_flip = augment.random_flip(augment.crop_and_resize(image, 16, crop_seed),
                                        flip_seed)
        np.testing.assert_allclose(view.numpy(), np.clip(crop_flip.numpy(), 0, 1), atol=1e-6)
