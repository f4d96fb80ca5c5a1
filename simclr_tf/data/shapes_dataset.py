"""``shapes``: the built-in dataset, generated on the fly (no download), deterministic per seed.

Each image is one of ten classes defined by SHAPE or TEXTURE only: five solid shapes (disk,
square, triangle, ring, cross) and five textured patches (horizontal, vertical and diagonal
stripes, a checkerboard, a grid of dots). Foreground and background colours are drawn
uniformly at random for every image, independently of the class, and the position, size,
stripe period, phase and duty cycle vary too, so a colour histogram says almost nothing about
the class (tests/data/shapes_dataset_test.py measures it). That is exactly the situation in
which SimCLR's strong colour distortion matters: the network must learn shape, not colour.
"""

from typing import Dict, Tuple

import numpy as np

NAME = "shapes"
CLASS_NAMES = ("disk", "square", "triangle", "ring", "cross",
               "h_stripes", "v_stripes", "d_stripes", "checkerboard", "dots")
NUM_CLASSES = len(CLASS_NAMES)
DEFAULT_SIZE = 32
DEFAULT_SPLIT_SIZES: Dict[str, int] = {"train": 5000, "validation": 1000, "test": 1000}
NOISE_STD = 0.03


def _solid_mask(label: int, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Masks [n, S, S] of a solid shape of radius r centred at dx = dy = 0."""
    dist = np.sqrt(dx**2 + dy**2)
    if label == 0:  # disk
        return dist <= r
    if label == 1:  # square of side 1.6 r
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.8 * r
    if label == 2:  # triangle pointing up: the half-width grows from the apex to the base
        t = (dy + 0.8 * r) / (1.6 * r)
        return (t >= 0) & (t <= 1) & (np.abs(dx) <= t * 0.9 * r)
    if label == 3:  # ring
        return (dist <= r) & (dist >= 0.55 * r)
    if label == 4:  # cross
        arm = 0.3 * r
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    raise ValueError(label)


def _texture_mask(label: int, x: np.ndarray, y: np.ndarray, period: np.ndarray,
                  phase: np.ndarray, duty: np.ndarray) -> np.ndarray:
    """Masks [n, S, S] of a periodic texture (before it is cut to its patch)."""
    def stripes(u):
        return np.mod(u / period + phase, 1.0) < duty
    if label == 5:
        return stripes(y)
    if label == 6:
        return stripes(x)
    if label == 7:
        return stripes((x + y) / np.sqrt(2.0))
    if label == 8:  # checkerboard
        return stripes(x) ^ stripes(y + 0.5 * period)
    if label == 9:  # dots on a square grid
        cx = np.mod(x / period + phase, 1.0) - 0.5
        cy = np.mod(y / period + phase, 1.0) - 0.5
        return np.sqrt(cx**2 + cy**2) <= 0.5 * duty
    raise ValueError(label)


def _colours(rng: np.random.Generator, n: int) -> Tuple[np.ndarray, np.ndarray]:
    """Foreground and background colours [n, 3], redrawn until they differ visibly."""
    fg = rng.uniform(0.0, 1.0, (n, 3))
    bg = rng.uniform(0.0, 1.0, (n, 3))
    for _ in range(100):
        close = np.abs(fg - bg).sum(axis=1) < 0.6
        if not close.any():
            break
        bg[close] = rng.uniform(0.0, 1.0, (int(close.sum()), 3))
    return fg, bg


def generate(num_examples: int, image_size: int = DEFAULT_SIZE, seed: int = 0
             ) -> Tuple[np.ndarray, np.ndarray]:
    """Generates a balanced, shuffled set of images of the ten classes.

    Args:
      num_examples: N.
      image_size: S (16 or more).
      seed: the same seed gives the same arrays on every machine.

    Returns:
      images uint8 [N, S, S, 3] and labels int32 [N].
    """
    if num_examples < 1:
        raise ValueError(f"num_examples={num_examples} must be >= 1.")
    if image_size < 16:
        raise ValueError(f"image_size={image_size} must be >= 16 for the shapes to be drawn.")
    rng = np.random.default_rng(seed)
    s = float(image_size)
    labels = rng.permutation(np.arange(num_examples) % NUM_CLASSES).astype(np.int32)
    grid = np.arange(image_size) + 0.5
    x = np.broadcast_to(grid[None, None, :], (1, image_size, image_size))
    y = np.broadcast_to(grid[None, :, None], (1, image_size, image_size))
    masks = np.zeros((num_examples, image_size, image_size), bool)
    for label in range(NUM_CLASSES):
        idx = np.flatnonzero(labels == label)
        n = len(idx)
        if label < 5:
            r = rng.uniform(0.22, 0.42, n) * s
            cx = rng.uniform(r, s - r)
            cy = rng.uniform(r, s - r)
            col = lambda v: v[:, None, None]  # noqa: E731
            masks[idx] = _solid_mask(label, x - col(cx), y - col(cy), col(r))
        else:
            col = lambda v: v[:, None, None]  # noqa: E731
            period = col(rng.uniform(0.14, 0.25, n) * s)
            mask = _texture_mask(label, x, y, period, col(rng.uniform(0, 1, n)),
                                 col(rng.uniform(0.4, 0.6, n)))
            w, h = rng.uniform(0.5, 0.85, n) * s, rng.uniform(0.5, 0.85, n) * s
            x0, y0 = rng.uniform(0, s - w), rng.uniform(0, s - h)
            patch = ((x >= col(x0)) & (x < col(x0 + w)) & (y >= col(y0)) & (y < col(y0 + h)))
            masks[idx] = mask & patch
    fg, bg = _colours(rng, num_examples)
    images = np.where(masks[..., None], fg[:, None, None, :], bg[:, None, None, :])
    images = images + rng.normal(0.0, NOISE_STD, images.shape)
    images = np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)
    return images, labels
