"""Augmentations against independent computations: NumPy bicubic resizes of the crop box read
off a coordinate ramp, NumPy colour formulas, crop statistics against TF's sampler rule, each op
eagerly and in tf.data, and the per-image on-device blur read off an impulse."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

import simclr_tf  # noqa: F401
from simclr_tf.data import augment


def _image(h=40, w=48, seed=0):
    return tf.random.stateless_uniform([h, w, 3], seed=[seed, 7])


SEED = tf.constant([3, 4], tf.int64)


def _keys(t, a=-0.5):
    """Keys' cubic convolution kernel (a = -0.5), TF's bicubic kernel."""
    t = np.abs(t)
    return np.where(t <= 1, ((a + 2) * t - (a + 3)) * t * t + 1,
                    np.where(t < 2, ((a * t - 5 * a) * t + 8 * a) * t - 4 * a, 0.0))


def _resize_matrix(n_in, n_out):
    """[n_out, n_in] weights of a bicubic resize with half-pixel centres, as TF computes them:
    source position in float32, its fraction on a 1/1024 grid, out-of-image taps dropped and
    the rest renormalised."""
    scale = np.float32(n_in) / np.float32(n_out)
    x = (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    x0 = np.floor(x)
    frac = np.rint((x - x0) * 1024) / 1024
    m = np.zeros([n_out, n_in])
    for k in range(-1, 3):
        idx = x0.astype(int) + k
        ok = (idx >= 0) & (idx < n_in)
        m[np.arange(n_out)[ok], idx[ok]] += _keys(k - frac)[ok]
    return m / m.sum(1, keepdims=True)


def _np_resize(image, size):
    """Bicubic resize of ``image`` [H, W, C] to size x size in float64."""
    h, w = image.shape[:2]
    return np.einsum("ih,jw,hwc->ijc", _resize_matrix(h, size), _resize_matrix(w, size),
                     np.asarray(image, np.float64))


def _ramp(h, w):
    """Channel 0 = row / h, channel 1 = column / w, channel 2 = 0.5: a crop of it, resized
    and flipped, tells which box was taken."""
    rows = np.broadcast_to(np.arange(h)[:, None] / h, (h, w))
    cols = np.broadcast_to(np.arange(w)[None, :] / w, (h, w))
    return np.stack([rows, cols, np.full((h, w), 0.5)], -1).astype(np.float32)


def _crop_box(out, h, w):
    """(top, left, height, width, flipped) of the box of an h x w ramp that ``out`` [S, S, 3]
    is the bicubic resize of (then flipped or not).

    Bicubic reproduces a linear ramp away from the box's edges, so on the central half of the
    output the source row is top - 0.5 + (i + 0.5) height / S (likewise columns): a line fit
    gives the box, which must be whole pixels.
    """
    size = out.shape[0]
    j = np.arange(size // 4, size - size // 4)
    rows = out[j, size // 2, 0] * h
    cols = out[size // 2, j, 1] * w
    flipped = bool(cols[-1] < cols[0])
    if flipped:
        cols = out[size // 2, size - 1 - j, 1] * w
    box = []
    for values in (rows, cols):
        slope, intercept = np.polyfit(j + 0.5, values, 1)
        assert np.abs(np.polyval([slope, intercept], j + 0.5) - values).max() < 1e-2
        box += [intercept + 0.5, slope * size]
    box = np.array(box)
    assert np.abs(box - np.rint(box)).max() < 1e-2, box  # a box of whole pixels
    top, height, left, width = np.rint(box).astype(int)
    assert 0 <= top and top + height <= h and 0 <= left and left + width <= w
    return top, left, height, width, flipped


def _np_crop_flip(image, box, size):
    """The NumPy view of ``box`` (from ``_crop_box``) of ``image``, resized to size x size."""
    top, left, height, width, flipped = box
    view = _np_resize(np.asarray(image)[top:top + height, left:left + width], size)
    return view[:, ::-1] if flipped else view


@pytest.mark.parametrize("shape,size,dtype", [
    ((40, 48), 24, "float32"),  # at 32 px and below: the whole image, resized
    ((30, 20), 24, "uint8"),
    ((40, 20), 32, "float32"),
    ((40, 48), 40, "float32"),  # above 32 px: centre crop 0.875 first
])
def test_eval_view_matches_a_numpy_bicubic_resize(shape, size, dtype):
    image = _image(*shape).numpy()
    if dtype == "uint8":
        image = np.round(image * 255).astype(np.uint8)
    out = augment.preprocess_for_eval(tf.constant(image), size).numpy()
    source = image / 255.0 if dtype == "uint8" else image
    if size > 32:  # the centred square of side round(0.875 * 40) = 35 of the 40 x 48 image
        source = source[3:38, 7:42]
    assert out.shape == (size, size, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, np.clip(_np_resize(source, size), 0, 1), atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_finetune_view_is_the_numpy_resize_of_the_box_read_off_a_ramp(dtype):
    # The crop box depends only on the seed and the image shape: a ramp of the same shape shows
    # it, and the view of any image is then its NumPy crop, resize and flip, clipped.
    h, w, size = 30, 36, 16
    ramp = tf.constant(_ramp(h, w))
    flips = set()
    for i in range(4):
        seed = tf.constant([i, 11], tf.int64)
        image = _image(h, w, seed=i).numpy()
        if dtype == "uint8":
            image = np.round(image * 255).astype(np.uint8)
        box = _crop_box(augment.preprocess_for_finetune(ramp, size, seed=seed).numpy(), h, w)
        flips.add(box[-1])
        out = augment.preprocess_for_finetune(tf.constant(image), size, seed=seed).numpy()
        source = image / 255.0 if dtype == "uint8" else image
        np.testing.assert_allclose(out, np.clip(_np_crop_flip(source, box, size), 0, 1),
                                   atol=1e-5)
    assert flips == {True, False}


@pytest.mark.parametrize("impl", ["v2", "v1"])
def test_pretrain_view_matches_numpy_crop_flip_and_colours(impl):
    # Geometry from the ramp as above; colours from the package's draws through the NumPy
    # colour formulas (``_np_distort``); then the clip.
    h, w, size = 30, 36, 16
    ramp = tf.constant(_ramp(h, w))
    cases = set()
    for i in range(6):
        seed = tf.constant([i, 12], tf.int64)
        image = _image(h, w, seed=i)
        ramp_view, _ = augment.pretrain_view_and_draws(ramp, size, 1.0, impl, seed)
        view = _np_crop_flip(image, _crop_box(ramp_view.numpy(), h, w), size)
        package_view, draws = augment.pretrain_view_and_draws(image, size, 1.0, impl, seed)
        np.testing.assert_allclose(package_view.numpy(), view, atol=1e-5)
        expected = _np_distort(view, draws.factors.numpy(), draws.order.numpy(),
                               bool(draws.jitter), bool(draws.gray), impl)
        out = augment.preprocess_for_pretrain(image, size, 1.0, impl, seed=seed).numpy()
        np.testing.assert_allclose(out, expected, atol=2e-5)
        cases.add((bool(draws.jitter), bool(draws.gray)))
    assert (True, False) in cases and len(cases) > 1


def test_seeded_ops_are_deterministic_and_differ_across_seeds():
    im = _image()
    a = augment.preprocess_for_pretrain(im, 24, 1.0, seed=SEED)
    b = augment.preprocess_for_pretrain(im, 24, 1.0, seed=SEED)
    c = augment.preprocess_for_pretrain(im, 24, 1.0, seed=SEED + 1)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.allclose(a.numpy(), c.numpy())


def test_unseeded_ops_draw_fresh_randomness():
    im = _image()
    outs = [augment.preprocess_for_pretrain(im, 24, 1.0).numpy() for _ in range(3)]
    assert not np.allclose(outs[0], outs[1]) or not np.allclose(outs[1], outs[2])


def _batch_distort(image, seed, impl):
    draws = augment.color_draws(1.0, seed, impl)
    stacked = augment.ColorDraws(*(d[tf.newaxis, tf.newaxis] for d in draws))
    return augment.batch_distort_colors(image[tf.newaxis], stacked,
                                        augment.jitter_ops(1.0, impl))[0]


# name: (op(image [20, 24, 3], seed), output side, takes a seed, output clipped to [0, 1])
OPS = {
    "crop_and_resize": (lambda im, s: augment.crop_and_resize(im, 16, s), 16, True, False),
    "flip": (lambda im, s: augment.random_flip(im, s), None, True, True),
    "color_jitter_v1": (lambda im, s: augment.color_jitter(im, 1.0, s, "v1"), None, True, True),
    "color_jitter_v2": (lambda im, s: augment.color_jitter(im, 1.0, s, "v2"), None, True, True),
    "random_color_jitter_v1": (lambda im, s: augment.random_color_jitter(im, 1.0, s, "v1"),
                               None, True, True),
    "random_color_jitter_v2": (lambda im, s: augment.random_color_jitter(im, 1.0, s, "v2"),
                               None, True, True),
    "batch_distort_colors_v2": (lambda im, s: _batch_distort(im, s, "v2"), None, True, True),
    "grayscale": (lambda im, s: augment.to_grayscale(im), None, False, True),
    "blur": (lambda im, s: augment.batch_random_blur(im[tf.newaxis], 0.5, s)[0], None, True,
             True),
    "pretrain_v1": (lambda im, s: augment.preprocess_for_pretrain(im, 16, 1.0, "v1", s), 16,
                    True, True),
    "pretrain_v2": (lambda im, s: augment.preprocess_for_pretrain(im, 16, 1.0, "v2", s), 16,
                    True, True),
    "finetune": (lambda im, s: augment.preprocess_for_finetune(im, 16, s), 16, True, True),
    "eval": (lambda im, s: augment.preprocess_for_eval(im, 16), 16, False, True),
    "eval_centre_crop": (lambda im, s: augment.preprocess_for_eval(im, 36), 36, False, True),
}


@pytest.mark.parametrize("name", list(OPS))
def test_op_gives_the_same_result_eagerly_and_in_tf_data(name):
    # big_vision's check of its preprocessing ops: the same seed gives the same output eagerly
    # and inside Dataset.map (seeds as graph tensors), and the seed matters. Unseeded, inside
    # tf.data each element draws afresh; shape, dtype and range hold either way.
    op, side, seeded, clipped = OPS[name]
    n = 4
    images = tf.random.stateless_uniform([n, 20, 24, 3], [8, 8])
    seeds = tf.constant([[i, 13] for i in range(n)], tf.int64)
    shape = (side, side, 3) if side else (20, 24, 3)

    def check(out):
        assert out.shape[1:] == shape and out.dtype == np.float32
        if clipped:
            assert out.min() >= 0.0 and out.max() <= 1.0
        if name == "grayscale":
            np.testing.assert_array_equal(out[..., 0], out[..., 2])
        return out

    eager = check(np.stack([op(images[i], seeds[i]).numpy() for i in range(n)]))
    ds = tf.data.Dataset.from_tensor_slices((images, seeds)).map(op, num_parallel_calls=2)
    in_data = check(next(iter(ds.batch(n))).numpy())
    assert in_data.shape[0] == n
    np.testing.assert_allclose(in_data, eager, rtol=0, atol=1e-6)
    if seeded:
        same_image = [op(images[0], seeds[i]).numpy() for i in range(n)]
        assert any(not np.array_equal(same_image[0], o) for o in same_image[1:])
        # 24 unseeded draws: the flip's and the blur's coins all equal with p = 2^-23.
        fresh = tf.data.Dataset.from_tensors(images[0]).repeat(24).map(lambda im: op(im, None))
        fresh = check(next(iter(fresh.batch(24))).numpy())
        assert any(not np.array_equal(fresh[0], o) for o in fresh[1:])


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


def test_jitter_order_is_a_uniform_random_permutation_and_is_the_one_applied():
    # The package's draw of the order: every one of the 4! orders, about equally often.
    draw = tf.function(augment.jitter_order)
    orders = [tuple(draw(tf.constant([i, 0], tf.int64)).numpy()) for i in range(480)]
    perms = list(itertools.permutations(range(4)))
    counts = np.array([orders.count(p) for p in perms])
    assert counts.sum() == len(orders)  # each draw is a permutation of 0..3
    chi2 = ((counts - 20.0) ** 2 / 20.0).sum()
    assert counts.min() > 0 and chi2 < 49.7, counts  # chi2, 23 dof: p = 0.001
    # The colour distortion's draws (``color_draws``, what the input pipeline uses) vary the
    # order the same way...
    view_draws = tf.function(lambda seed: augment.color_draws(1.0, seed).order)
    drawn = {tuple(view_draws(tf.constant([i, 1], tf.int64)).numpy()) for i in range(120)}
    assert len(drawn) >= 20
    # ...and ``color_jitter`` applies the ops in the drawn order: of the NumPy formulas in
    # all 24 orders, those that give its output include the drawn one and are few (the ops do
    # not commute: the v1 brightness is added, contrast scales around the mean, ...).
    image = _image(10, 12).numpy()
    for i in range(4):
        seed = tf.constant([i, 2], tf.int64)
        factors, order = augment._jitter_draws(1.0, seed, "v1")
        out = augment.color_jitter(image, 1.0, seed=seed, impl="v1").numpy()
        matching = [p for p in perms if np.abs(
            out - _np_distort(image, factors.numpy(), p, True, False, "v1")).max() < 2e-5]
        assert tuple(order.numpy()) in matching and len(matching) <= 3, (order, matching)


def _np_sampler_areas(h, w, n, rng):
    """Area fractions of TF's bounding-box sampler (sample_distorted_bounding_box_op.cc) with
    the package's constants, in NumPy: the aspect uniform, then the crop HEIGHT uniform between
    the heights of the smallest and largest allowed areas (clipped to fit), so areas lean small;
    failed attempts are redrawn."""
    total = h * w
    low, high = augment.CROP_AREA_RANGE[0] * total, augment.CROP_AREA_RANGE[1] * total
    areas = []
    while len(areas) < n:
        aspect = rng.uniform(*augment.CROP_ASPECT_RANGE)
        height = int(np.rint(np.sqrt(low / aspect)))
        max_height = int(np.rint(np.sqrt(high / aspect)))
        if np.rint(max_height * aspect) > w:
            max_height = int((w + 0.5 - 1e-7) / aspect)
            max_height -= int(np.rint(max_height * aspect) > w)
        max_height = min(max_height, h)
        height = min(height, max_height)
        height += rng.integers(0, max_height - height + 1)
        width = int(np.rint(height * aspect))
        if width * height < low:
            height += 1
            width = int(np.rint(height * aspect))
        area = width * height
        if (low <= area <= high and 0 < width <= w and 0 < height <= h
                and area >= augment.CROP_MIN_OBJECT_COVERED * total):
            areas.append(area / total)
    return np.array(areas)


def test_crop_and_resize_area_and_aspect_statistics():
    # The package's crop of a ramp tells its box: over many seeds the area fraction lies in
    # [0.08, 1] (0.1 with min_object_covered) and the aspect in [3/4, 4/3] up to the rounding
    # of the width to whole pixels; both ranges are covered, the areas follow TF's sampler,
    # and the view of any image is the NumPy bicubic resize of that box.
    h, w, size = 48, 64, 16
    ramp = tf.constant(_ramp(h, w))
    crop = tf.function(lambda image, seed: augment.crop_and_resize(image, size, seed))
    boxes = np.array([_crop_box(crop(ramp, tf.constant([i, 1], tf.int64)).numpy(), h, w)
                      for i in range(600)])
    assert not boxes[:, 4].any()  # crop_and_resize does not flip
    heights, widths = boxes[:, 2], boxes[:, 3]
    areas, aspects = heights * widths / (h * w), widths / heights
    assert 0.08 <= areas.min() and areas.max() <= 1.0
    assert augment.CROP_MIN_OBJECT_COVERED <= areas.min() < 0.13 and areas.max() > 0.9
    assert np.all(aspects >= 3 / 4 - 0.5 / heights) and np.all(aspects <= 4 / 3 + 0.5 / heights)
    assert aspects.min() < 0.78 and aspects.max() > 1.3
    ref = _np_sampler_areas(h, w, 20000, np.random.default_rng(0))
    assert abs(areas.mean() - ref.mean()) < 0.03, (areas.mean(), ref.mean())
    grid = np.linspace(0.0, 1.0, 201)
    ks = np.abs(np.searchsorted(np.sort(areas), grid, "right") / len(areas)
                - np.searchsorted(np.sort(ref), grid, "right") / len(ref)).max()
    assert ks < 0.08, ks  # Kolmogorov-Smirnov, n = 600: p = 0.001
    for i in range(10):
        image = _image(h, w, seed=i)
        out = crop(image, tf.constant([i, 1], tf.int64)).numpy()
        np.testing.assert_allclose(out, _np_crop_flip(image, boxes[i], size), atol=1e-5)


def test_flip_flips_the_whole_image_or_nothing():
    ramp = _ramp(6, 10)
    flipped = {bool(augment.random_flip(ramp, seed=tf.constant([i, 0], tf.int64))[0, 0, 1] > 0)
               for i in range(8)}
    assert flipped == {True, False}
    for i in range(8):
        out = augment.random_flip(ramp, seed=tf.constant([i, 0], tf.int64)).numpy()
        assert np.array_equal(out, ramp) or np.array_equal(out, ramp[:, ::-1])


def test_flip_probability_is_one_half():
    ramp = tf.tile(tf.linspace(0.0, 1.0, 8)[tf.newaxis, :, tf.newaxis], [2, 1, 3])
    flips = [float(augment.random_flip(ramp, seed=tf.constant([i, 5], tf.int64))[0, 0, 0]) > 0.5
             for i in range(400)]
    assert 0.42 < np.mean(flips) < 0.58


def test_eval_at_32_px_and_below_uses_the_whole_image():
    im = _image(32, 32)
    np.testing.assert_array_equal(augment.preprocess_for_eval(im, 32).numpy(), im.numpy())


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


def test_batch_random_blur_draws_one_sigma_and_one_coin_per_image():
    # 400 copies of an impulse: each blurred copy is its own 3 x 3 kernel (32 px), so its
    # sigma and its coin are read off the output. A side tap over the centre tap is
    # g(1) / g(0) = exp(-1 / (2 sigma^2)); an image left alone has zero side taps.
    images = np.zeros([400, 32, 32, 3], np.float32)
    images[:, 16, 16] = 1.0
    none = augment.batch_random_blur(images, p=0.0, seed=SEED)
    np.testing.assert_array_equal(none.numpy(), images)
    every = augment.batch_random_blur(images, p=1.0, seed=SEED).numpy()
    centre, side = every[:, 16, 16, 0].astype(np.float64), every[:, 16, 17, 0]
    sigma = np.sqrt(-1 / (2 * np.log(side / centre)))
    assert 0.1 - 1e-4 <= sigma.min() < 0.15 and 1.95 < sigma.max() <= 2.0 + 1e-4
    assert abs(sigma.mean() - 1.05) < 0.1  # U(0.1, 2): mean 1.05, sd 0.55
    assert sigma.std() > 0.45  # one sigma per image, not one per batch
    np.testing.assert_allclose(every, augment.gaussian_blur(images, sigma, 3).numpy(),
                               atol=1e-6)
    half = augment.batch_random_blur(images, p=0.5, seed=SEED).numpy()
    coins = half[:, 16, 17, 0] > 0
    assert 0.42 < coins.mean() < 0.58  # binomial(400, 0.5): +-3 standard deviations
    np.testing.assert_array_equal(half[coins], every[coins])  # the same sigma per image
    np.testing.assert_array_equal(half[~coins], images[~coins])
    assert abs(sigma[coins].mean() - sigma[~coins].mean()) < 0.2  # coins independent of sigma


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
    # Each view is then the NumPy crop, resize and flip of the box read off a ramp, clipped,
    # with no colour change (the ramp's constant third channel stays 0.5).
    image = np.random.default_rng(0).uniform(size=[20, 20, 3]).astype(np.float32)
    ramp = tf.constant(_ramp(20, 20))
    for i in range(10):
        seed = tf.constant([i, 4], tf.int64)
        ramp_view = augment.preprocess_for_pretrain(ramp, 16, 0.0, seed=seed).numpy()
        np.testing.assert_allclose(ramp_view[..., 2], 0.5, atol=1e-6)
        view = augment.preprocess_for_pretrain(image, 16, 0.0, seed=seed).numpy()
        box = _crop_box(ramp_view, 20, 20)
        np.testing.assert_allclose(view, np.clip(_np_crop_flip(image, box, 16), 0, 1),
                                   atol=1e-5)

