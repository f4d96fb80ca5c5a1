"""Pairs of views of given training images, made by the pretraining pipeline of a run's
flags (crop, flip, colour strength and kind, and the step's blur), and their grid in
TensorBoard at the start of a pretraining run (``--views_summary``)."""

from typing import List, Tuple

import numpy as np
import tensorflow as tf

from simclr_tf.core import config as config_lib
from simclr_tf.data import augment, sources, transforms
from simclr_tf.data import pipeline as data_lib


def view_pairs(cfg: config_lib.Config, source: sources.Source, num_images: int,
               num_pairs: int) -> Tuple[List[np.ndarray], np.ndarray]:
    """The first ``num_images`` training images (float [H, W, 3]) and ``num_pairs`` pairs of
    views of each, [n, pairs, 2, S, S, 3], from the pretraining pipeline of ``cfg`` (a seed per
    pair; blurred on the device as the step does when ``cfg.device_blur``)."""
    images = [image for image, _ in source.read(cfg.train_split).take(num_images)]
    originals = [augment.to_float(image).numpy() for image in images]
    # The pipeline's own map of an example to its two views, applied to these very images
    # (the training input would shuffle a folder's files).
    two_views = data_lib.pretrain_map(cfg.image_size, cfg.color_jitter_strength,
                                      cfg.color_jitter_impl, xla=False,
                                      recipe=transforms.recipe_of(cfg))
    pairs = []
    for p in range(num_pairs):
        images_p = tf.stack([
            two_views(image, 0, seed=tf.constant([cfg.seed * 1000 + p, i], tf.int64))[0]
            for i, image in enumerate(images)])
        if cfg.device_blur:
            images_p = augment.blur_views(images_p, cfg.seed + p, tf.constant(0), 1)
        pairs.append(tf.stack(tf.split(images_p, 2, axis=-1), axis=1).numpy())
    return originals, np.stack(pairs, axis=1)


def views_summary(cfg: config_lib.Config, source: sources.Source, summary_dir: str,
                  num_images: int = 8):
    """An image summary ``augmented_views`` at step 0 in ``summary_dir``: one pair of views
    of each of ``num_images`` training images (a column each; first view above)."""
    _, views = view_pairs(cfg, source, num_images, 1)  # [n, 1, 2, S, S, 3]
    n, size = views.shape[0], views.shape[3]
    grid = views[:, 0].transpose(1, 2, 0, 3, 4).reshape(2 * size, n * size, 3)
    with tf.summary.create_file_writer(summary_dir).as_default():
        tf.summary.image("augmented_views", grid[None], step=0,
                         description=f"pairs of views of {n} training images")
