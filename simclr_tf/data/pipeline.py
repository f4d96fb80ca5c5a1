"""The tf.data pipelines, and ``get_source`` (a ``--dataset`` value to its source).

``build_dataset`` turns a source's examples into per-replica batches for pretraining (two
views stacked on channels, [b, S, S, 6]), fine-tuning or evaluation ([b, S, S, 3]). Batch
sizes given here are GLOBAL; each input pipeline gets ``global / num_replicas`` from its
``tf.distribute.InputContext``. The sources are in ``simclr_tf/data/sources.py`` (arrays, the
built-in set, TFDS) and ``simclr_tf/data/folder.py`` (image folders).
"""

from typing import Dict, Optional

import tensorflow as tf

from simclr_tf.data import augment, file_views, folder, shapes_dataset, sources, transforms

BUILTIN = shapes_dataset.NAME
FOLDER = folder.NAME
MODES = ("pretrain", "finetune", "eval")


def get_source(dataset: str, data_dir: Optional[str] = None, seed: int = 0,
               builtin_sizes: Optional[Dict[str, int]] = None,
               folder_labels: bool = True) -> sources.Source:
    """The source for a ``--dataset`` value: the built-in set, ``folder`` or a TFDS name."""
    accepted = (f"{BUILTIN!r} (built in), {FOLDER!r} (an image folder given by --data_dir) or "
                "a TFDS name such as 'cifar10', 'stl10', 'imagenet2012', "
                "'imagenet2012_subset/1pct'")
    if not dataset:
        raise ValueError(f"dataset={dataset!r}: give {accepted}.")
    if dataset == BUILTIN:
        return sources.BuiltinSource(seed=seed, sizes=builtin_sizes)
    if dataset == FOLDER:
        return folder.FolderSource(data_dir, seed=seed, folder_labels=folder_labels)
    return sources.TFDSSource(dataset, data_dir, accepted)


def pretrain_map(image_size, strength, impl, xla, recipe=None):
    """Two views per example, stacked on channels; with ``xla`` the views leave before their
    colour distortion, with its draws, for ``augment.batch_distort_colors`` after batching.
    A ``transforms.Recipe`` replaces the standard views (no XLA step)."""
    if recipe is not None:
        return lambda image, label, seed=None: (
            transforms.two_views(image, recipe, image_size, seed), label)

    def fn(image, label, seed=None):
        seeds = (None, None) if seed is None else tf.unstack(
            tf.random.experimental.stateless_split(seed, 2))
        if not xla:
            views = [augment.preprocess_for_pretrain(image, image_size, strength, impl, seed=s)
                     for s in seeds]
            return tf.concat(views, axis=-1), label
        views, draws = zip(*[augment.pretrain_view_and_draws(image, image_size, strength,
                                                             impl, seed=s) for s in seeds])
        return tf.concat(views, axis=-1), label, augment.ColorDraws.stacked(draws)
    return fn


def _distort_batch(names):
    def fn(images, labels, draws):
        return augment.batch_distort_colors(images, draws, names), labels
    return fn


def _encoded_pretrain_map(image_size, strength, impl, xla):
    """``pretrain_map`` from encoded images (``file_views``): the same views and draws."""
    names = augment.jitter_ops(strength, impl)

    def fn(contents, label, seed=None):
        seeds = (None, None) if seed is None else tf.unstack(
            tf.random.experimental.stateless_split(seed, 2))
        views, draws = file_views.pretrain_views_and_draws(contents, image_size, strength,
                                                           impl, seeds)
        if xla:
            return tf.concat(views, -1), label, augment.ColorDraws.stacked(draws)
        views = [augment.finish(augment.distort_colors(v, d, names), image_size)
                 for v, d in zip(views, draws)]
        return tf.concat(views, axis=-1), label
    return fn


def _encoded_finetune_map(image_size):
    """``augment.preprocess_for_finetune`` from encoded images: the same view."""
    def fn(contents, label, seed=None):
        crop_seed, flip_seed = augment.view_seeds(seed, 2)
        (view,) = file_views.crops(contents, image_size, [crop_seed])
        return augment.finish(augment.random_flip(view, flip_seed), image_size), label
    return fn


def _example_map(mode, image_size, strength, impl, xla, encoded=False, recipe=None):
    """The per-example map of ``mode``: ``fn(image, label[, seed])`` (``encoded``: the
    image is the file's bytes; ``recipe``: the training views of ``--augmentations``)."""
    if recipe is not None and mode == "finetune":
        return lambda im, lb, seed=None: (transforms.one_view(im, recipe, image_size, seed), lb)
    if encoded:  # never with a recipe (build_dataset decodes those images whole)
        return (_encoded_pretrain_map(image_size, strength, impl, xla) if mode == "pretrain"
                else _encoded_finetune_map(image_size))
    if mode == "pretrain":
        return pretrain_map(image_size, strength, impl, xla, recipe)
    if mode == "finetune":
        return lambda im, lb, seed=None: (
            augment.preprocess_for_finetune(im, image_size, seed=seed), lb)
    return lambda im, lb: (augment.preprocess_for_eval(im, image_size), lb)


def build_dataset(source: sources.Source, split: str, mode: str, global_batch_size: int,
                  image_size: int, input_context: Optional[tf.distribute.InputContext] = None,
                  color_jitter_strength: float = 1.0, color_jitter_impl: str = "v2",
                  cache: bool = False, seed: Optional[int] = None,
                  shuffle_buffer: Optional[int] = None,
                  jit_augment: bool = True, window_decode: bool = True,
                  recipe: Optional[transforms.Recipe] = None) -> tf.data.Dataset:
    """A pipeline of per-replica batches ``(images, labels)``.

    Args:
      source: where the examples come from.
      split: the split to read.
      mode: ``pretrain`` (two augmented views stacked on channels: [b, S, S, 6]),
        ``finetune`` (crop + flip: [b, S, S, 3]) or ``eval`` (centre crop: [b, S, S, 3]).
        Training modes shuffle, repeat forever and drop the last partial batch; ``eval``
        reads the split once and keeps it.
      global_batch_size: the batch over all replicas; this pipeline yields its share.
      image_size: S.
      input_context: from ``strategy.distribute_datasets_from_function``.
      color_jitter_strength, color_jitter_impl: the colour distortion (pretrain only).
      cache: cache the decoded images (before shuffling and augmentation).
      seed: makes the shuffle and the augmentation a function of (seed, input pipeline,
        example position) when given: a rerun sees the same batches.
      shuffle_buffer: defaults to the original's per-replica batch x (50 at <= 32 px else 10).
      jit_augment: the colour distortion of each batch in one XLA computation
        (``augment.batch_distort_colors``; pretrain only) instead of TF's kernels per view.
      window_decode: training from a source that ``reads_encoded`` (TFDS's JPEG datasets)
        decodes only the box holding the crops (``file_views``: the same views), unless
        ``cache`` asks to keep the decoded images; False decodes every image whole first, as
        the original did.
      recipe: the training views of ``--augmentations`` instead of the standard ones (each
        image decoded whole; no XLA colour step).
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not supported; use one of {MODES}.")
    num_replicas = input_context.num_replicas_in_sync if input_context else 1
    training = mode != "eval"
    check_batch_divides(global_batch_size, num_replicas,
                        "train_batch_size" if training else "eval_batch_size")
    batch = global_batch_size // num_replicas
    jit_augment = jit_augment and recipe is None
    encoded = (training and window_decode and not cache and source.reads_encoded
               and recipe is None)
    read = source.read_encoded if encoded else source.read
    ds = read(split, input_context, shuffle_files=training)
    if cache:
        ds = ds.cache()
    if training:
        buffer = shuffle_buffer or batch * (50 if image_size <= 32 else 10)
        ds = ds.shuffle(buffer, seed=seed).repeat()
    fn = _example_map(mode, image_size, color_jitter_strength, color_jitter_impl, jit_augment,
                      encoded, recipe)
    if training and seed is not None:
        if input_context is not None:  # each input pipeline draws its own augmentations
            seed = seed * 1009 + input_context.input_pipeline_id
        ds = ds.enumerate().map(
            lambda i, ex: fn(*ex, seed=tf.stack([tf.cast(seed, tf.int64), i])),
            num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch, drop_remainder=training)
    if mode == "pretrain" and jit_augment:
        names = augment.jitter_ops(color_jitter_strength, color_jitter_impl)
        ds = ds.map(_distort_batch(names), num_parallel_calls=tf.data.AUTOTUNE)
    if training:
        options = tf.data.Options()
        options.deterministic = seed is not None
        ds = ds.with_options(options)
    return ds.prefetch(tf.data.AUTOTUNE)


def view_settings(cfg) -> Dict:
    """The ``build_dataset`` arguments of a run's training views (``cfg``: a Config): its
    colour distortion, XLA switch and ``--augmentations`` recipe. The training input and the
    held-out views an evaluator draws (``evaluation.running.Run.views_input``) take them
    from here, so both draw views the same way."""
    return dict(color_jitter_strength=cfg.color_jitter_strength,
                color_jitter_impl=cfg.color_jitter_impl, jit_augment=cfg.jit_augment,
                recipe=transforms.recipe_of(cfg))


def check_batch_divides(global_batch_size: int, num_replicas: int, flag: str):
    """A clear error when a global batch does not split evenly across replicas."""
    if global_batch_size < 1 or global_batch_size % num_replicas:
        nearest = max(num_replicas, global_batch_size // num_replicas * num_replicas)
        raise ValueError(
            f"--{flag}={global_batch_size} must be a positive multiple of the number of "
            f"replicas ({num_replicas}), e.g. {nearest}.")
