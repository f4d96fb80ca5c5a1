"""The named transformations of ``--augmentations``: the paper's figure-5 set, composed in
any order, for the ablation of which augmentations matter (``simclr-ablate
--study=augmentation_pairs``) and for ordinary runs.

``crop`` (random crop + resize to S, and the horizontal flip), ``color`` (the colour
distortion of ``--color_jitter_strength``: jitter with probability 0.8, grayscale with 0.2)
and ``blur`` (sigma ~ U(0.1, 2.0) px, probability 0.5) are SimCLR's own, from ``augment``.
The other four are defined here (the paper's figure 4 shows them; the sizes are ours, stated
in docs/ablations.md):

- ``cutout``: a square of side S/2 (DeVries and Taylor's CIFAR-10 setting, 16 of 32 px),
  centred at a uniformly random pixel and clipped at the border, set to 0;
- ``sobel``: the Sobel gradient magnitude of the luma (reflected border), divided by its
  largest value in the image, on three channels;
- ``noise``: i.i.d. Gaussian noise of standard deviation 0.1 added to every value;
- ``rotate``: a rotation by 90, 180 or 270 degrees, uniformly.

Every op is a pure function of the image and a stateless seed. A ``Recipe`` is a list of
names with how the two views use it: both views transformed (ordinary runs), or, as the
paper's figure 5, one random crop shared by the two views and the list applied to the second
view only (``one_view``).
"""

import dataclasses
from typing import Optional, Tuple

import tensorflow as tf

from simclr_tf.core import choices
from simclr_tf.data import augment

CUTOUT_FRACTION = 0.5
NOISE_STDDEV = 0.1
BLUR_PROBABILITY = 0.5


@dataclasses.dataclass(frozen=True)
class Recipe:
    """``names`` applied in order to each view, or with ``one_view`` to the second view of
    a shared crop; ``color_strength`` and ``color_impl`` are those of ``color``."""

    names: Tuple[str, ...]
    one_view: bool = False
    color_strength: float = 1.0
    color_impl: str = "v2"


def recipe_of(cfg) -> Optional[Recipe]:
    """The recipe of a run's ``--augmentations`` (None when empty: SimCLR's standard views)."""
    names = choices.parse_augmentations(cfg.augmentations)
    if not names:
        return None
    return Recipe(names, cfg.augment_one_view, cfg.color_jitter_strength,
                  cfg.color_jitter_impl)


def cutout_at(image: tf.Tensor, top, left, side) -> tf.Tensor:
    """``image`` [H, W, C] with rows top..top+side-1 and columns left..left+side-1 (those
    inside the image) set to 0."""
    shape = tf.shape(image)
    rows = tf.range(shape[0])
    cols = tf.range(shape[1])
    inside_rows = tf.logical_and(rows >= top, rows < top + side)
    inside_cols = tf.logical_and(cols >= left, cols < left + side)
    hole = tf.logical_and(inside_rows[:, tf.newaxis], inside_cols[tf.newaxis, :])
    return image * tf.cast(tf.logical_not(hole), image.dtype)[..., tf.newaxis]


def cutout(image: tf.Tensor, seed, fraction: float = CUTOUT_FRACTION) -> tf.Tensor:
    """A square of side ``fraction`` x H centred at a random pixel, set to 0."""
    shape = tf.shape(image)
    side = tf.maximum(tf.cast(tf.math.round(fraction * tf.cast(shape[0], tf.float32)),
                              tf.int32), 1)
    centre = tf.random.stateless_uniform([2], seed, maxval=tf.int32.max, dtype=tf.int32)
    centre = centre % shape[:2]
    return cutout_at(image, centre[0] - side // 2, centre[1] - side // 2, side)


def sobel(image: tf.Tensor) -> tf.Tensor:
    """The Sobel gradient magnitude of the luma over its image maximum, on 3 channels."""
    gray = tf.image.rgb_to_grayscale(image)[tf.newaxis]
    edges = tf.image.sobel_edges(gray)[0, :, :, 0, :]  # [H, W, (dy, dx)]
    magnitude = tf.norm(edges, axis=-1)
    magnitude = tf.math.divide_no_nan(magnitude, tf.reduce_max(magnitude))
    return tf.tile(magnitude[..., tf.newaxis], [1, 1, 3])


def gaussian_noise(image: tf.Tensor, seed, stddev: float = NOISE_STDDEV) -> tf.Tensor:
    """``image`` plus i.i.d. N(0, stddev^2) noise, clipped to [0, 1]."""
    noise = tf.random.stateless_normal(tf.shape(image), seed, stddev=stddev)
    return tf.clip_by_value(image + noise, 0.0, 1.0)


def rotate(image: tf.Tensor, seed) -> tf.Tensor:
    """A rotation by k x 90 degrees, k uniform in {1, 2, 3} (a square image keeps its shape)."""
    k = tf.random.stateless_uniform([], seed, minval=1, maxval=4, dtype=tf.int32)
    return tf.image.rot90(image, k)


def random_blur(image: tf.Tensor, seed, p: float = BLUR_PROBABILITY) -> tf.Tensor:
    """SimCLR's blur of one image (``augment.batch_random_blur`` on a batch of one)."""
    return augment.batch_random_blur(image[tf.newaxis], p=p, seed=seed)[0]


def _resize(image: tf.Tensor, image_size: int) -> tf.Tensor:
    return tf.image.resize(image[tf.newaxis], [image_size, image_size], method="bicubic")[0]


def _crop(image, image_size, seed):
    crop_seed, flip_seed = augment.view_seeds(seed, 2)
    return augment.random_flip(augment.crop_and_resize(image, image_size, crop_seed), flip_seed)


def _apply_one(name: str, image: tf.Tensor, recipe: Recipe, seed) -> tf.Tensor:
    if name == "cutout":
        return cutout(image, seed)
    if name == "color":
        return augment.random_color_jitter(tf.clip_by_value(image, 0.0, 1.0),
                                           recipe.color_strength, seed, recipe.color_impl)
    if name == "sobel":
        return sobel(tf.clip_by_value(image, 0.0, 1.0))
    if name == "noise":
        return gaussian_noise(image, seed)
    if name == "blur":
        return random_blur(image, seed)
    return rotate(image, seed)


def apply(image: tf.Tensor, recipe: Recipe, image_size: int, seed) -> tf.Tensor:
    """``recipe.names`` in order on a float image of any size, to [S, S, 3] in [0, 1].

    ``crop`` takes its window from the image as it is; the other ops work on the image
    resized to S x S first (bicubic), unless it is S x S already or a crop came first."""
    seeds = augment.view_seeds(seed, max(len(recipe.names), 1))
    sized = tuple(image.shape[:2]) == (image_size, image_size)  # e.g. the shared crop
    for name, op_seed in zip(recipe.names, seeds):
        if name == "crop":
            image, sized = _crop(image, image_size, op_seed), True
            continue
        if not sized:
            image, sized = _resize(image, image_size), True
        image = _apply_one(name, image, recipe, op_seed)
    if not sized:
        image = _resize(image, image_size)
    return augment.finish(image, image_size)


def two_views(image: tf.Tensor, recipe: Recipe, image_size: int, seed) -> tf.Tensor:
    """The pretraining pair of ``recipe``, stacked on channels [S, S, 6]: ``apply`` on each
    view, or with ``one_view`` a shared random crop (with its flip) as the first view and
    ``apply`` of that crop as the second (the paper's figure-5 setting)."""
    image = augment.to_float(image)
    base_seed, first_seed, second_seed = augment.view_seeds(seed, 3)
    if recipe.one_view:
        base = augment.finish(_crop(image, image_size, base_seed), image_size)
        views = [base, apply(base, recipe, image_size, second_seed)]
    else:
        views = [apply(image, recipe, image_size, s) for s in (first_seed, second_seed)]
    return tf.concat(views, axis=-1)


def one_view(image: tf.Tensor, recipe: Recipe, image_size: int, seed) -> tf.Tensor:
    """The fine-tuning view of ``recipe`` (a supervised run on the same augmentations)."""
    return apply(augment.to_float(image), recipe, image_size, seed)
