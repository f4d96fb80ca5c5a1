"""SimCLR's image augmentations on float images in [0, 1] (docs/method.md).

Every random op takes ``seed``: a shape-[2] integer tensor that makes the result a
deterministic function of it (stateless ops only), or None to draw one. The per-image ops run
in the input pipeline: crop and flip per example; the colour distortion per example on TF's
kernels (``distort_colors``) or, by default in ``pipeline.build_dataset``, per batch in one XLA
computation (``batch_distort_colors``) from draws made per example. The Gaussian blur
(``batch_random_blur``) runs on device inside the pretraining step, with one sigma and one
coin per image, and is never part of an export.
"""

import functools
from typing import List, NamedTuple, Sequence, Tuple

import tensorflow as tf

from simclr_tf.core import choices

CROP_AREA_RANGE = (0.08, 1.0)
CROP_ASPECT_RANGE = (3 / 4, 4 / 3)
CROP_MIN_OBJECT_COVERED = 0.1
CROP_MAX_ATTEMPTS = 100
EVAL_CROP_PROPORTION = 0.875
BLUR_SIGMA_RANGE = (0.1, 2.0)


def _seeds(seed, num: int) -> List[tf.Tensor]:
    """``num`` independent stateless seeds derived from ``seed`` (drawn when None)."""
    if seed is None:
        seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    return tf.unstack(tf.random.experimental.stateless_split(seed, num))


def _uniform(seed, low, high, shape=()) -> tf.Tensor:
    return tf.random.stateless_uniform(shape, seed, minval=low, maxval=high)


def to_float(image: tf.Tensor) -> tf.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; float images are assumed to be in [0, 1] already."""
    image = tf.convert_to_tensor(image)
    if image.dtype.is_integer:
        return tf.image.convert_image_dtype(image, tf.float32)
    return tf.cast(image, tf.float32)


def crop_and_resize(image: tf.Tensor, image_size: int, seed=None) -> tf.Tensor:
    """Random crop of 8%..100% of the area, aspect 3/4..4/3, bicubic resize to S x S.

    TF's bounding-box sampler with ``min_object_covered`` 0.1 and 100 attempts; when every
    attempt fails it returns the whole image. Values may overshoot [0, 1] (bicubic).
    """
    begin, size = crop_window(tf.shape(image), seed)
    crop = tf.slice(image, begin, size)
    return tf.image.resize(crop[tf.newaxis], [image_size, image_size], method="bicubic")[0]


def crop_window(shape: tf.Tensor, seed=None) -> Tuple[tf.Tensor, tf.Tensor]:
    """The window ``crop_and_resize`` takes from an image of ``shape`` [H, W, C]: ``(begin,
    size)`` for ``tf.slice``. It needs the shape alone, so a JPEG's window can be drawn from
    its header and only the window decoded (``file_views``)."""
    (seed,) = _seeds(seed, 1)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
        min_object_covered=CROP_MIN_OBJECT_COVERED, aspect_ratio_range=CROP_ASPECT_RANGE,
        area_range=CROP_AREA_RANGE, max_attempts=CROP_MAX_ATTEMPTS,
        use_image_if_no_bounding_boxes=True)
    return begin, size


def random_flip(image: tf.Tensor, seed=None) -> tf.Tensor:
    """Horizontal flip with probability 0.5."""
    (seed,) = _seeds(seed, 1)
    return tf.image.stateless_random_flip_left_right(image, seed)


def to_grayscale(image: tf.Tensor) -> tf.Tensor:
    """Luma (0.2989 R + 0.587 G + 0.114 B) repeated on 3 channels."""
    return tf.tile(tf.image.rgb_to_grayscale(image), [1, 1, 3])


def _adjust_brightness_v2(image, factor):  # multiplicative
    return image * factor


def _adjust_brightness_v1(image, delta):  # additive
    return image + delta


class ColorDraws(NamedTuple):
    """One view's colour-distortion draws (stacked along leading axes for a batch)."""

    factors: tf.Tensor  # [n] jitter factors, in ``jitter_ops`` order
    order: tf.Tensor  # [n] int32: the i-th op applied is jitter_ops(...)[order[i]]
    jitter: tf.Tensor  # bool: apply the jitter
    gray: tf.Tensor  # bool: then convert to grayscale

    @classmethod
    def stacked(cls, draws) -> "ColorDraws":
        """The draws of several views, stacked along a new leading axis."""
        return cls(*(tf.stack(d) for d in zip(*draws)))


_ADJUST = {"brightness_v2": _adjust_brightness_v2, "brightness_v1": _adjust_brightness_v1,
           "contrast": tf.image.adjust_contrast, "saturation": tf.image.adjust_saturation,
           "hue": tf.image.adjust_hue}


def jitter_ops(strength: float, impl: str = "v2") -> tuple:
    """The names of the jitter ops of strength s (ops of magnitude 0 are left out)."""
    choices.check_choice("color_jitter_impl", impl, choices.COLOR_JITTER_IMPLS, flag=False)
    if strength <= 0:
        return ()
    return (f"brightness_{impl}", "contrast", "saturation", "hue")


def jitter_order(seed, n: int = 4) -> tf.Tensor:
    """The order of the ``n`` jitter ops from a stateless ``seed``: a uniformly random
    permutation of ``range(n)`` (int32); the i-th op applied is ``jitter_ops(...)[order[i]]``."""
    return tf.argsort(_uniform(seed, 0.0, 1.0, [n]))


def _jitter_draws(strength: float, seed, impl: str):
    """The random factors [n] and the random order [n] of one jitter of ``jitter_ops``.

    Magnitudes are 0.8 s, 0.8 s, 0.8 s and 0.2 s for strength s.
    """
    names = jitter_ops(strength, impl)
    b = c = s = 0.8 * strength
    h = 0.2 * strength
    order_seed, b_seed, c_seed, s_seed, h_seed = _seeds(seed, 5)
    if not names:
        return tf.zeros([0]), tf.zeros([0], tf.int32)
    factors = [_uniform(b_seed, max(0.0, 1.0 - b), 1.0 + b) if impl == "v2"
               else _uniform(b_seed, -b, b),
               _uniform(c_seed, 1 - c, 1 + c), _uniform(s_seed, 1 - s, 1 + s),
               _uniform(h_seed, -h, h)]
    order = jitter_order(order_seed, len(names))
    return tf.stack(factors), order


def _jitter(image, factors, order, names):
    """Applies op ``names[order[i]]`` for i = 0, 1, ..., clipping to [0, 1] after each."""
    for i in range(len(names)):
        branches = [lambda k=k, name=name: tf.clip_by_value(_ADJUST[name](image, factors[k]),
                                                            0.0, 1.0)
                    for k, name in enumerate(names)]
        image = tf.switch_case(order[i], branches)
    return image


def color_jitter(image: tf.Tensor, strength: float, seed=None, impl: str = "v2") -> tf.Tensor:
    """Brightness, contrast, saturation and hue jitter in a random order, clipped after each.

    Magnitudes are 0.8 s, 0.8 s, 0.8 s and 0.2 s for strength s; strength 0 is the identity.
    """
    names = jitter_ops(strength, impl)
    if not names:
        return image
    factors, order = _jitter_draws(strength, seed, impl)
    return _jitter(image, factors, order, names)


def color_draws(strength: float, seed=None, impl: str = "v2", p_jitter: float = 0.8,
                p_gray: float = 0.2) -> ColorDraws:
    """The random draws of one view's colour distortion (see ``distort_colors``).

    Strength 0 turns off the whole colour step, grayscale included, as in the original (the
    paper's "no colour distortion" ablation)."""
    jitter_coin, jitter_seed, gray_coin = _seeds(seed, 3)
    factors, order = _jitter_draws(strength, jitter_seed, impl)
    p_gray = p_gray if strength > 0 else 0.0
    return ColorDraws(factors, order, _uniform(jitter_coin, 0.0, 1.0) < p_jitter,
                      _uniform(gray_coin, 0.0, 1.0) < p_gray)


def distort_colors(image: tf.Tensor, draws: ColorDraws, names: tuple) -> tf.Tensor:
    """Jitter (ops ``names``) when ``draws.jitter``, grayscale when ``draws.gray``, clip."""
    if names:
        image = tf.cond(draws.jitter, lambda: _jitter(image, draws.factors, draws.order, names),
                        lambda: image)
    image = tf.cond(draws.gray, lambda: to_grayscale(image), lambda: image)
    return tf.clip_by_value(image, 0.0, 1.0)


def random_color_jitter(image: tf.Tensor, strength: float, seed=None, impl: str = "v2",
                        p_jitter: float = 0.8, p_gray: float = 0.2) -> tf.Tensor:
    """Colour jitter with probability ``p_jitter``, then grayscale with ``p_gray``."""
    draws = color_draws(strength, seed, impl, p_jitter, p_gray)
    return distort_colors(image, draws, jitter_ops(strength, impl))


@functools.lru_cache(maxsize=None)
def _batch_distort_fn(names: tuple, views: int):
    def fn(images, factors, order, jitter, gray):
        def one(example):
            image, *draws = example
            out = [distort_colors(image[..., 3 * v:3 * v + 3],
                                  ColorDraws(*(d[v] for d in draws)), names)
                   for v in range(views)]
            return tf.concat(out, axis=-1)
        return tf.map_fn(one, (images, factors, order, jitter, gray),
                         fn_output_signature=images.dtype)
    return tf.function(fn, jit_compile=True, autograph=False)


def batch_distort_colors(images: tf.Tensor, draws: ColorDraws, names: tuple) -> tf.Tensor:
    """``distort_colors`` over a batch, in one XLA computation for the input pipeline's CPU.

    ``images`` [B, S, S, 3 V] holds V views per example on its channels and ``draws`` their
    draws, stacked [B, V, ...]. XLA fuses each view's ops into vectorised loops instead of
    TF's per-pixel HSV kernels and pays one launch per batch, not per view (its speed-up is
    measured by ``simclr-bench --parts=input``, figures in docs/performance.md), with values
    within float rounding of TF's kernels. One function per op list and view count is built
    and shared, so XLA compiles it once per batch shape.
    """
    views = images.shape[-1] // 3
    return _batch_distort_fn(names, views)(images, *draws)


def center_crop(image: tf.Tensor, image_size: int,
                crop_proportion: float = EVAL_CROP_PROPORTION) -> tf.Tensor:
    """The centred square of side ``crop_proportion * min(H, W)``, bicubic-resized to S."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    side = tf.cast(tf.math.rint(
        crop_proportion * tf.cast(tf.minimum(height, width), tf.float32)), tf.int32)
    side = tf.maximum(side, 1)
    top = (height - side + 1) // 2
    left = (width - side + 1) // 2
    crop = image[top:top + side, left:left + side]
    return tf.image.resize(crop[tf.newaxis], [image_size, image_size], method="bicubic")[0]


def finish(image: tf.Tensor, image_size: int) -> tf.Tensor:
    """Clip to [0, 1] and fix the static shape [S, S, 3]."""
    image = tf.clip_by_value(image, 0.0, 1.0)
    return tf.ensure_shape(image, [image_size, image_size, 3])


def view_seeds(seed=None, num: int = 3) -> List[tf.Tensor]:
    """The (crop, flip, colour) seeds of one pretraining view; (crop, flip) with num=2, as
    ``preprocess_for_finetune`` draws them."""
    return _seeds(seed, num)


def pretrain_view_and_draws(image: tf.Tensor, image_size: int,
                            color_jitter_strength: float = 1.0, color_jitter_impl: str = "v2",
                            seed=None):
    """A pretraining view before its colours (crop + resize, flip: [S, S, 3]) and the draws
    of its colour distortion, for ``distort_colors`` or ``batch_distort_colors``."""
    crop_seed, flip_seed, color_seed = view_seeds(seed)
    image = crop_and_resize(to_float(image), image_size, crop_seed)
    image = tf.ensure_shape(random_flip(image, flip_seed), [image_size, image_size, 3])
    return image, color_draws(color_jitter_strength, color_seed, color_jitter_impl)


def preprocess_for_pretrain(image: tf.Tensor, image_size: int,
                            color_jitter_strength: float = 1.0, color_jitter_impl: str = "v2",
                            seed=None) -> tf.Tensor:
    """One pretraining view: crop + resize, flip, colour distortion (blur comes on device)."""
    image, draws = pretrain_view_and_draws(image, image_size, color_jitter_strength,
                                           color_jitter_impl, seed)
    image = distort_colors(image, draws, jitter_ops(color_jitter_strength, color_jitter_impl))
    return finish(image, image_size)


def preprocess_for_finetune(image: tf.Tensor, image_size: int, seed=None) -> tf.Tensor:
    """Fine-tuning / linear-evaluation training view: crop + resize and flip only."""
    crop_seed, flip_seed = view_seeds(seed, 2)
    image = crop_and_resize(to_float(image), image_size, crop_seed)
    return finish(random_flip(image, flip_seed), image_size)


def preprocess_for_eval(image: tf.Tensor, image_size: int) -> tf.Tensor:
    """Evaluation view: centre crop 0.875 + bicubic resize above 32 px.

    At 32 px and below the whole image is used (as the original for CIFAR), resized only when
    its size differs from S x S.
    """
    image = to_float(image)
    if image_size > 32:
        image = center_crop(image, image_size)
    else:
        shape = tf.shape(image)
        same = tf.logical_and(tf.equal(shape[0], image_size), tf.equal(shape[1], image_size))
        image = tf.cond(
            same, lambda: image,
            lambda: tf.image.resize(image[tf.newaxis], [image_size, image_size],
                                    method="bicubic")[0])
    return finish(image, image_size)


def blur_kernel_size(image_size: int) -> int:
    """``image_size // 10`` made odd: 32 px -> 3, 224 px -> 23."""
    k = image_size // 10
    return 2 * (k // 2) + 1


def gaussian_kernels(sigma: tf.Tensor, kernel_size: int) -> tf.Tensor:
    """Normalised 1-D Gaussian kernels [B, kernel_size], one per sigma."""
    radius = kernel_size // 2
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    sigma = tf.reshape(tf.cast(sigma, tf.float32), [-1, 1])
    kernels = tf.exp(-tf.square(x) / (2.0 * tf.square(sigma)))
    return kernels / tf.reduce_sum(kernels, axis=1, keepdims=True)


def gaussian_blur(images: tf.Tensor, sigma: tf.Tensor, kernel_size: int) -> tf.Tensor:
    """Blurs image b of ``images`` [B, H, W, C] with a Gaussian of ``sigma[b]``.

    Separable (horizontal then vertical) with ``SAME`` zero padding, vectorised: the batch is
    folded into the channels of one depthwise convolution, so each image gets its own kernel
    in a single op.
    """
    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    kernels = tf.repeat(gaussian_kernels(sigma, kernel_size), channels, axis=0)  # [B*C, k]
    kernels = tf.transpose(kernels)  # [k, B*C]
    folded = tf.reshape(tf.transpose(images, [1, 2, 0, 3]),
                        [1, height, width, batch * channels])
    horizontal = tf.reshape(kernels, [1, kernel_size, -1, 1])
    vertical = tf.reshape(kernels, [kernel_size, 1, -1, 1])
    out = tf.nn.depthwise_conv2d(folded, horizontal, [1, 1, 1, 1], "SAME")
    out = tf.nn.depthwise_conv2d(out, vertical, [1, 1, 1, 1], "SAME")
    out = tf.reshape(out, [height, width, batch, channels])
    return tf.ensure_shape(tf.transpose(out, [2, 0, 1, 3]), images.shape)


def batch_random_blur(images: tf.Tensor, p: float = 0.5, seed=None,
                      sigma_range: Sequence[float] = BLUR_SIGMA_RANGE,
                      offset=0, global_batch=None) -> tf.Tensor:
    """Blurs each image of ``images`` [B, S, S, C] with probability p, sigma ~ U(sigma_range).

    The kernel size comes from the static image height (``blur_kernel_size``). With a seed,
    the draws are made for a global batch of ``global_batch`` images (default B) and this
    batch takes rows ``offset .. offset + B``: a replica passing its position in the global
    batch blurs each image exactly as one device holding the whole batch would.
    """
    images = tf.convert_to_tensor(images)
    size = images.shape[1]
    if size is None:
        raise ValueError(f"batch_random_blur needs a static image height; got {images.shape}.")
    sigma_seed, coin_seed = _seeds(seed, 2)
    batch = tf.shape(images)[0]
    total = batch if global_batch is None else global_batch
    rows = tf.range(batch) + offset
    sigma = tf.gather(_uniform(sigma_seed, sigma_range[0], sigma_range[1], [total]), rows)
    coins = tf.gather(_uniform(coin_seed, 0.0, 1.0, [total]), rows) < p
    blurred = gaussian_blur(images, sigma, blur_kernel_size(size))
    out = tf.where(tf.reshape(coins, [-1, 1, 1, 1]), blurred, images)
    return tf.clip_by_value(out, 0.0, 1.0)


def blur_views(images: tf.Tensor, seed: int, step: tf.Tensor, num_replicas: int) -> tf.Tensor:
    """The on-device Gaussian blur of the two views stacked on channels ``[B, H, W, 6]``.

    Per image, an independent sigma and coin; its draws are a function of (seed, step,
    position in the global batch), so a step blurs the same images the same way on any
    number of replicas. Call it in a replica context."""
    ctx = tf.distribute.get_replica_context()
    local = tf.shape(images)[0]
    offset = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * local
    step_seed = tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64)])
    views = tf.split(images, 2, axis=-1)
    seeds = tf.unstack(tf.random.experimental.stateless_split(step_seed, 2))
    return tf.concat([batch_random_blur(v, seed=s, offset=offset,
                                        global_batch=local * num_replicas)
                      for v, s in zip(views, seeds)], axis=-1)
