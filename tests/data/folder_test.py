"""Image folders as users have them, TFDS-style split slices, and label subsets."""

import dataclasses
import io

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

import simclr_tf  # noqa: F401
from simclr_tf.core.config import Config
from simclr_tf.data import folder, label_subsets, pipeline, sources
from simclr_tf.evaluation import supervised
from simclr_tf.training import run_inputs, train

RNG = np.random.default_rng(7)


def _png(path, size=(10, 12)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 256, (*size, 3), np.uint8)).save(path, format="PNG")


def _tree(root, layout):
    """Writes ``{relative path: None}`` as small PNGs under root; returns root as str."""
    for rel in layout:
        _png(root / rel)
    return str(root)


@pytest.mark.parametrize("eval_folder", ["val", "validation", "test"])
def test_imagenet_layout_answers_to_the_default_eval_split(tmp_path, eval_folder):
    root = _tree(tmp_path, [f"train/{c}/{i}.png" for c in "xyz" for i in range(3)]
                 + [f"{eval_folder}/{c}/{i}.png" for c in "xyz" for i in range(2)])
    source = folder.FolderSource(root)
    for name in ("validation", eval_folder):  # the default --eval_split and its own name
        source.check_split(name)
        assert source.num_examples(name) == 6
        assert sorted(source.labels(name)) == [0, 0, 1, 1, 2, 2]
    assert source.num_examples("train") == 9 and source.class_names == ["x", "y", "z"]
    with pytest.raises(ValueError, match="'holdout' does not exist"):
        source.check_split("holdout")


def test_hidden_files_and_folders_are_neither_images_nor_classes(tmp_path):
    root = _tree(tmp_path, ["cat/0.png", "dog/1.png", "dog/2.png", ".ipynb_checkpoints/3.png",
                            "cat/._0.png", "dog/.thumbs/4.png"])
    (tmp_path / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    source = folder.FolderSource(root)
    assert source.class_names == ["cat", "dog"]
    assert source.num_examples("train") + source.num_examples("validation") == 3


def test_val_wins_over_test_for_the_validation_split(tmp_path):
    root = _tree(tmp_path, ["train/a/0.png", "train/b/0.png", "val/a/0.png", "test/a/0.png",
                            "test/b/1.png"])
    source = folder.FolderSource(root)
    assert source.num_examples("validation") == 1 and source.num_examples("test") == 2


def test_flat_folder_and_any_tree_are_unlabelled_images(tmp_path):
    flat = _tree(tmp_path / "flat", [f"{i}.png" for i in range(5)])
    source = folder.FolderSource(flat)
    assert not source.labelled and source.info.splits == ("train",)
    assert list(source.labels("train")) == [sources.UNLABELLED] * 5
    tree = _tree(tmp_path / "tree", ["2023/01/a.png", "2023/02/b.png", "2024/c.png"])
    labelled = folder.FolderSource(tree)  # folder names taken as classes, nested images found
    assert labelled.class_names == ["2023", "2024"] and labelled.num_examples("train") + \
        labelled.num_examples("validation") == 3
    unlabelled = folder.FolderSource(tree, folder_labels=False)
    assert not unlabelled.labelled and unlabelled.num_examples("train") == 3
    images = [im for im, label in unlabelled.read("train") if int(label) == -1]
    assert len(images) == 3 and images[0].shape == (10, 12, 3)


def test_split_folders_that_disagree_on_labels_are_refused(tmp_path):
    root = _tree(tmp_path, ["train/a/0.png", "val/0.png"])
    with pytest.raises(ValueError, match="train/ has class sub-folders, val/ holds unlabelled"):
        folder.FolderSource(root)


def test_pretraining_an_unlabelled_folder_turns_the_probe_off_and_finetuning_says_why(
        tmp_path, capsys):
    root = _tree(tmp_path / "imgs", [f"{i}.png" for i in range(8)])
    cfg = Config(dataset="folder", data_dir=root, model_dir=str(tmp_path / "run"),
                 image_size=16, resnet_depth=18, width_multiplier=0.25, num_proj_layers=1,
                 proj_out_dim=8, train_batch_size=4, train_steps=1, strategy="default",
                 keep_hub_module_max=0, use_blur=False, global_bn=False)
    source, with_head, counts = run_inputs.training_source(cfg)  # the probe is on by default
    assert not with_head and not source.labelled and counts == {}
    assert "pretraining without the linear probe" in capsys.readouterr().out
    with pytest.raises(ValueError, match="finetune .* needs labelled images.*no labels"):
        run_inputs.training_source(Config(**{**cfg.__dict__, "train_mode": "finetune"}))


def test_a_folder_of_one_class_pretrains_without_the_probe_and_classifiers_say_why(
        tmp_path, capsys, tiny):
    # One class sub-folder: legitimate images, nothing to tell apart. The run (probe and kNN
    # monitor on by default) trains and exports without them; what classifies refuses.
    root = _tree(tmp_path / "imgs", [f"only/{i}.png" for i in range(8)])
    run = tiny(tmp_path / "run", dataset="folder", data_dir=root, train_batch_size=4,
               eval_batch_size=4, train_steps=1, knn_monitor=True)
    assert run.lineareval_while_pretraining
    summary = train.run(run)
    out = capsys.readouterr().out
    assert "are of one class ('only'), nothing to tell apart: pretraining without the " \
        "linear probe and the kNN monitor" in out, out
    assert summary["global_step"] == 1 and "top1" not in summary and "knn_top1" not in summary
    one_class = r"needs images of 2 or more classes, and .*imgs holds one class \('only'\)"
    with pytest.raises(ValueError, match="finetune .*" + one_class):
        run_inputs.training_source(dataclasses.replace(run, train_mode="finetune"))
    with pytest.raises(ValueError, match="evaluation " + one_class):
        supervised.evaluate(dataclasses.replace(run, train_mode="finetune",
                                                checkpoint=str(tmp_path / "run")))


@pytest.mark.parametrize("split,expected", [
    ("train", list(range(40))), ("train[:10%]", list(range(4))),
    ("train[35:]", [35, 36, 37, 38, 39]),
    ("train[-2:]", [38, 39]), ("train[10%:15%]", [4, 5]),
    ("validation+train[:1]", list(range(40, 53)) + [0])])
def test_split_slices_select_what_tfds_would(split, expected):
    source = sources.BuiltinSource(seed=3, sizes={"train": 40, "validation": 13})
    everything = np.concatenate([source.arrays("train")[0], source.arrays("validation")[0]])
    images, _ = source.examples(split)
    np.testing.assert_array_equal(images, everything[expected])
    assert source.num_examples(split) == len(expected)


def test_bad_split_names_say_what_is_accepted():
    source = sources.BuiltinSource(seed=0, sizes={"train": 4})
    with pytest.raises(ValueError, match=r"'train\[:x\]' is not understood.*train\[:10%\]"):
        source.check_split("train[:x]")
    with pytest.raises(ValueError, match="'tset' does not exist"):
        source.check_split("tset[:5]")


class TinyShapes(tfds.core.GeneratorBasedBuilder):
    """A TFDS dataset prepared on disk by the test (no download): 30 train and 9 test
    examples of 3 classes, with file names like ImageNet's."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 3)),
            "label": tfds.features.ClassLabel(names=["p", "q", "r"]),
            "file_name": tfds.features.Text()}), supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(30, 0), "test": self._generate_examples(9, 1)}

    def _generate_examples(self, n, seed):
        rng = np.random.default_rng(seed)
        for i in range(n):
            yield i, {"image": rng.integers(0, 255, (8, 8, 3), np.uint8), "label": i % 3,
                      "file_name": f"n0{i % 3}_{seed}_{i}.JPEG"}


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    TinyShapes(data_dir=data_dir).download_and_prepare()
    return pipeline.get_source("tiny_shapes", data_dir)


def test_tfds_split_slices_are_read_by_tfds(tiny_tfds):
    tiny_tfds.check_split("train[:25%]")
    assert tiny_tfds.num_examples("train[:25%]") == 8  # round(7.5), as TFDS rounds
    assert len(list(tiny_tfds.read("train[10:]"))) == 20
    assert tiny_tfds.num_examples("train+test") == 39
    with pytest.raises(ValueError, match="'valid' does not exist.*'train', 'test'"):
        tiny_tfds.check_split("valid[:10%]")


def test_tfds_label_subsets_by_class_and_by_file_name(tiny_tfds, tmp_path):
    kept, counts = label_subsets.apply(tiny_tfds, "train",
                                       label_subsets.LabelSubset(per_class=2, seed=4))
    assert counts == {"p": 2, "q": 2, "r": 2} and kept.num_examples("train") == 6
    read = sorted(int(label) for _, label in kept.read("train", shuffle_files=True))
    assert read == [0, 0, 1, 1, 2, 2] and tiny_tfds.num_examples("train") == 30
    names = tmp_path / "names.txt"
    names.write_text("n01_0_4.JPEG\nn02_0_5.JPEG\nn02_0_8.JPEG\n")
    kept, counts = label_subsets.apply(tiny_tfds, "train",
                                       label_subsets.LabelSubset(name_file=str(names)))
    assert counts == {"q": 1, "r": 2}
    assert sorted(int(label) for _, label in kept.read("train")) == [1, 2, 2]


def test_distillation_keeps_every_image_and_hides_the_other_labels(tiny_tfds, tmp_path):
    subset = label_subsets.LabelSubset(per_class=2, seed=4)
    kept, _ = label_subsets.apply(tiny_tfds, "train", subset)
    masked, counts = label_subsets.apply(tiny_tfds, "train", subset, mask=True)
    assert counts == {"p": 2, "q": 2, "r": 2}

    def pairs(source):
        return sorted((image.numpy().tobytes(), int(label))
                      for image, label in source.read("train"))
    read = pairs(masked)
    assert [image for image, _ in read] == [image for image, _ in pairs(tiny_tfds)]  # all 30
    assert sorted(p for p in read if p[1] >= 0) == pairs(kept)  # the subset keeps its labels
    assert sum(label == -1 for _, label in read) == 24
    root = _tree(tmp_path / "imgs", [f"train/{c}/{c}_{i}.png" for c in "ab" for i in range(4)]
                 + ["val/a/v.png", "val/b/w.png"])
    names = tmp_path / "names.txt"
    names.write_text("a_1.png\nb_2.png\n")
    source = folder.FolderSource(root)
    masked, counts = label_subsets.apply(
        source, "train", label_subsets.LabelSubset(name_file=str(names)), mask=True)
    files, labels = masked.file_names("train"), masked.labels("train")
    assert counts == {"a": 1, "b": 1} and len(files) == 8
    assert {f: int(y) for f, y in zip(files, labels) if y >= 0} == {"train/a/a_1.png": 0,
                                                                    "train/b/b_2.png": 1}


def _reference_subset_sizes(labels, fraction):
    return {c: max(1, int(round(fraction * np.sum(labels == c)))) for c in np.unique(labels)}


def test_balanced_subset_keeps_the_share_of_every_class_and_is_seeded():
    labels = np.repeat(np.arange(4), [50, 20, 7, 1])
    keep = label_subsets.balanced(labels, fraction=0.1, seed=1)
    assert {c: int(np.sum(labels[keep] == c)) for c in range(4)} == \
        _reference_subset_sizes(labels, 0.1) == {0: 5, 1: 2, 2: 1, 3: 1}
    assert len(set(keep)) == len(keep) and list(keep) == sorted(keep)
    np.testing.assert_array_equal(keep, label_subsets.balanced(labels, fraction=0.1, seed=1))
    assert not np.array_equal(keep, label_subsets.balanced(labels, fraction=0.1, seed=2))
    per = label_subsets.balanced(labels, per_class=3, seed=0)
    assert [int(np.sum(labels[per] == c)) for c in range(4)] == [3, 3, 3, 1]


def test_label_file_names_images_by_file_name_or_relative_path(tmp_path):
    root = _tree(tmp_path / "imgs", [f"train/{c}/{c}_{i}.png" for c in "ab" for i in range(4)]
                 + ["val/a/v.png", "val/b/w.png"])
    names = tmp_path / "1percent.txt"
    names.write_text("# the images with labels\na_1.png\nb/b_2.png\n\nmissing.png\n")
    source = folder.FolderSource(root)
    sub = label_subsets.LabelSubset(name_file=str(names))
    kept, counts = label_subsets.apply(source, "train", sub)
    assert counts == {"a": 1, "b": 1} and kept.num_examples("train") == 2
    assert sorted(kept.file_names("train")) == ["train/a/a_1.png", "train/b/b_2.png"]
    assert source.num_examples("train") == 8  # the original source is unchanged
    names.write_text("nothing.png\n")
    with pytest.raises(ValueError, match="none of the 1 names"):
        label_subsets.apply(source, "train", sub)


def test_label_subset_flags_are_checked():
    with pytest.raises(ValueError, match="give one of --train_label_fraction"):
        Config(model_dir="/tmp/x", train_mode="finetune", train_label_fraction=0.1,
               train_examples_per_class=2).validate()
    with pytest.raises(ValueError, match="fraction=1.5 must be in"):
        Config(model_dir="/tmp/x", train_mode="finetune", train_label_fraction=1.5).validate()
    with pytest.raises(ValueError, match="choose the labelled examples of fine-tuning"):
        Config(model_dir="/tmp/x", train_examples_per_class=2).validate()


def _jpeg_with_trailing_bytes():
    buffer = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (12, 14, 3), np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue() + b"\x00" * 300 + b"phone maker's trailer"


def test_a_jpeg_with_bytes_after_its_end_is_a_good_image(tmp_path):
    payload = _jpeg_with_trailing_bytes()
    assert folder.image_file_problem(tf.constant(payload)).numpy() == b""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "phone.jpg").write_bytes(payload)
    (tmp_path / "a" / "cut.jpg").write_bytes(payload[:200])
    source = folder.FolderSource(str(tmp_path), folder_labels=False)
    images = list(source.read("train"))
    assert len(images) == 1 and images[0][0].shape == (12, 14, 3) and source.skipped == 1
