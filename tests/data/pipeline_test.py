"""Data sources (built-in, image folder, TFDS mock) and the tf.data pipelines."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

import simclr_tf  # noqa: F401
from simclr_tf.data import folder, shapes_dataset, sources
from simclr_tf.data import pipeline as data


def _small_builtin():
    return sources.BuiltinSource(seed=3, sizes={"train": 40, "validation": 13})


def test_builtin_pretrain_batches_hold_two_different_views():
    ds = data.build_dataset(_small_builtin(), "train", "pretrain", 8, 24, seed=1)
    images, labels = next(iter(ds))
    assert images.shape == (8, 24, 24, 6) and images.dtype == tf.float32
    assert labels.shape == (8,) and labels.dtype == tf.int32
    assert float(tf.reduce_min(images)) >= 0.0 and float(tf.reduce_max(images)) <= 1.0
    v1, v2 = np.split(images.numpy(), 2, axis=-1)
    assert np.abs(v1 - v2).mean() > 0.01  # two independent augmentations


def test_seeded_pipeline_is_reproducible():
    a = next(iter(data.build_dataset(_small_builtin(), "train", "pretrain", 4, 16, seed=5)))
    b = next(iter(data.build_dataset(_small_builtin(), "train", "pretrain", 4, 16, seed=5)))
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())


def test_xla_colour_distortion_gives_the_batches_of_tf_kernels():
    # --jit_augment (one XLA computation per batch) and TF's per-view kernels: the same draws,
    # the same views up to float rounding.
    src = _small_builtin()
    xla, tf_kernels = (next(iter(data.build_dataset(src, "train", "pretrain", 8, 24, seed=2,
                                                    jit_augment=jit)))
                       for jit in (True, False))
    np.testing.assert_array_equal(xla[1].numpy(), tf_kernels[1].numpy())
    np.testing.assert_allclose(xla[0].numpy(), tf_kernels[0].numpy(), atol=1e-5)
    assert xla[0].shape == (8, 24, 24, 6)


def test_eval_reads_each_example_once_and_keeps_the_last_partial_batch():
    source = _small_builtin()
    batches = list(data.build_dataset(source, "validation", "eval", 5, 32))
    assert [b[0].shape[0] for b in batches] == [5, 5, 3]
    images = np.concatenate([b[0].numpy() for b in batches])
    raw, labels = source.arrays("validation")
    # At 32 px the eval image is the raw image (no crop), as floats in [0, 1].
    np.testing.assert_allclose(images, raw / 255.0, atol=1e-6)
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in batches]), labels)


def test_finetune_batches_are_crops_of_the_data():
    ds = data.build_dataset(_small_builtin(), "train", "finetune", 6, 16, seed=0)
    images, labels = next(iter(ds))
    assert images.shape == (6, 16, 16, 3)
    assert set(labels.numpy()) <= set(range(shapes_dataset.NUM_CLASSES))


def test_input_context_splits_the_global_batch_and_the_data():
    source = _small_builtin()
    seen = []
    for pipeline in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                         num_replicas_in_sync=2)
        images, _ = next(iter(data.build_dataset(source, "validation", "eval", 4, 32, ctx)))
        assert images.shape[0] == 2  # per-replica share of the global batch of 4
        seen.append({im.tobytes() for im in (images.numpy() * 255).round().astype(np.uint8)})
    assert not seen[0] & seen[1]


def test_batch_that_does_not_divide_names_the_values():
    with pytest.raises(ValueError, match=r"--train_batch_size=6 .*replicas \(4\), e\.g\. 4"):
        data.check_batch_divides(6, 4, "train_batch_size")
    ctx = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                     num_replicas_in_sync=3)
    with pytest.raises(ValueError, match="eval_batch_size=10"):
        data.build_dataset(_small_builtin(), "validation", "eval", 10, 32, ctx)


def test_unknown_split_and_mode():
    with pytest.raises(ValueError, match="'tset'.*'train', 'validation'"):
        _small_builtin().num_examples("tset")
    with pytest.raises(ValueError, match="mode='train'"):
        data.build_dataset(_small_builtin(), "train", "train", 4, 16)


def _write(path, array, fmt):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


def _make_folder(root, rng):
    """Two classes of images with 1, 3 and 4 channels, JPEG and PNG, various sizes."""
    count = 0
    for c in ("cat", "dog"):
        for i in range(6):
            h, w = rng.integers(20, 60, size=2)
            kind = i % 3
            if kind == 0:
                _write(f"{root}/{c}/{i}.png", rng.integers(0, 255, (h, w), np.uint8), "PNG")
            elif kind == 1:
                _write(f"{root}/{c}/{i}.jpg", rng.integers(0, 255, (h, w, 3), np.uint8), "JPEG")
            else:
                _write(f"{root}/{c}/{i}.PNG", rng.integers(0, 255, (h, w, 4), np.uint8), "PNG")
            count += 1
    return count


def test_folder_reads_every_kind_of_image_and_skips_bad_files(tmp_path, caplog):
    rng = np.random.default_rng(0)
    root = str(tmp_path / "imgs")
    n = _make_folder(root, rng)
    with open(f"{root}/cat/notes.txt", "w") as f:
        f.write("not an image")
    with open(f"{root}/dog/broken.jpg", "wb") as f:
        f.write(b"\xff\xd8 definitely not a jpeg")
    source = data.get_source("folder", root, seed=0)
    assert source.info.num_classes == 2 and source.class_names == ["cat", "dog"]
    assert set(source.info.splits) == {"train", "validation"}
    examples = [ex for split in ("train", "validation") for ex in source.read(split)]
    assert len(examples) == n  # the broken file is skipped, not fatal
    for image, label in examples:
        assert image.dtype == tf.uint8 and image.shape[-1] == 3
        assert int(label) in (0, 1)
    images, _ = next(iter(data.build_dataset(source, "train", "pretrain", 4, 16, seed=0)))
    assert images.shape == (4, 16, 16, 6)


def test_folder_holdout_is_seeded_disjoint_and_per_class(tmp_path):
    root = str(tmp_path / "imgs")
    rng = np.random.default_rng(1)
    for c in ("a", "b"):
        for i in range(20):
            _write(f"{root}/{c}/{i}.png", rng.integers(0, 255, (8, 8, 3), np.uint8), "PNG")
    s1 = folder.FolderSource(root, seed=4)
    s2 = folder.FolderSource(root, seed=4)
    s3 = folder.FolderSource(root, seed=5)
    train, held = list(s1._examples["train"][0]), list(s1._examples["validation"][0])
    assert len(held) == 4 and len(train) == 36 and not set(train) & set(held)
    assert sorted(s1._examples["validation"][1]) == [0, 0, 1, 1]
    assert held == list(s2._examples["validation"][0])
    assert held != list(s3._examples["validation"][0])


def test_folder_with_train_and_val_subfolders(tmp_path):
    root = str(tmp_path / "imgs")
    rng = np.random.default_rng(2)
    for split, k in (("train", 3), ("val", 2)):
        for c in ("x", "y", "z"):
            for i in range(k):
                _write(f"{root}/{split}/{c}/{i}.png",
                       rng.integers(0, 255, (10, 12, 3), np.uint8), "PNG")
    source = folder.FolderSource(root)
    assert set(source.info.splits) == {"train", "val"} and source.info.num_classes == 3
    assert source.num_examples("train") == 9 and source.num_examples("val") == 6


@pytest.mark.parametrize("layout,match", [
    ("missing", "does not exist"),
    ("file", "is a file"),
    ("empty", "has no sub-folders but no images"),
    ("no_images", "no images"),
])
def test_folder_errors_name_the_problem(tmp_path, layout, match):
    root = tmp_path / "d"
    if layout == "file":
        root.write_text("x")
    elif layout == "empty":
        root.mkdir()
    elif layout == "no_images":
        (root / "cls").mkdir(parents=True)
        (root / "cls" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match=match):
        data.get_source("folder", str(root))
    with pytest.raises(ValueError, match="--data_dir is required"):
        data.get_source("folder", None)


def test_tfds_mock_dataset_with_unknown_split_sizes():
    with tfds.testing.mock_data(num_examples=11):
        source = data.get_source("cifar10")
        assert source.info.num_classes == 10
        assert not source.reads_encoded  # PNG: decoded whole in the source, as before
        assert source.num_examples("train") == 11
        images, labels = next(iter(data.build_dataset(source, "train", "pretrain", 4, 16)))
        assert images.shape == (4, 16, 16, 6) and labels.dtype == tf.int32
        images, _ = next(iter(data.build_dataset(source, "test", "eval", 4, 32)))
        assert images.shape == (4, 32, 32, 3)


@pytest.mark.parametrize("mode,jit", [("pretrain", True), ("pretrain", False),
                                      ("finetune", False)])
def test_tfds_training_decodes_only_the_crops_box_and_gives_the_same_batches(
        mode, jit, monkeypatch):
    from simclr_tf.data import file_views  # noqa: PLC0415

    boxes = []
    crops = file_views.crops
    monkeypatch.setattr(file_views, "crops", lambda *a: boxes.append(1) or crops(*a))
    with tfds.testing.mock_data(num_examples=12):  # imagenet2012's images are JPEG files
        source = data.get_source("imagenet2012")
        assert source.reads_encoded
        # TFDS's own decoding of these JPEGs (the mock hands out the images it encoded, so
        # the decoded path is rebuilt from the same bytes, as TFDS decodes them).
        monkeypatch.setattr(source, "read", lambda *a, **k: source.read_encoded(*a, **k).map(
            lambda contents, label: (file_views.decode_whole(contents), label)))
        batches = {}
        for window in (True, False):
            boxes.clear()
            ds = data.build_dataset(source, "train", mode, 4, 16, seed=3, jit_augment=jit,
                                    window_decode=window)
            batches[window] = [b for b, _ in ds.take(3)]
            assert bool(boxes) == window  # the path taken: the crops' box, or whole images
    for got, want in zip(batches[True], batches[False]):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_tfds_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'no_such_dataset_xyz'"):
        data.get_source("no_such_dataset_xyz")
    with pytest.raises(ValueError, match="not an image-classification dataset"):
        data.get_source("glue/cola")
    source = data.get_source("cifar10", str(tmp_path))
    with pytest.raises(ValueError, match="not prepared.*tfds build cifar10"):
        source.read("train")
