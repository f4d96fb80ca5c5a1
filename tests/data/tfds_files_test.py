"""Datasets as `tfds build` prepares them, read by the TFDS path (not tfds.testing.mock_data,
which fakes the reading): the real CIFAR-10 and ImageNet builders write their own files
(records, dataset_info.json, features.json, in data_dir/NAME/VERSION/) from a few generated
images instead of downloading, then the registered builders read them back, as on a machine
where `tfds build cifar10` ran."""

import io

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.datasets.imagenet2012 import imagenet2012_dataset_builder
from tensorflow_datasets.image_classification import cifar

import simclr_tf  # noqa: F401
from simclr_tf.core import endpoints as ep
from simclr_tf.core.config import LabelSubset
from simclr_tf.data import label_subsets, pipeline
from simclr_tf.training import train

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]
SIZES = {"cifar10": {"train": 30, "test": 10}, "imagenet2012": {"train": 16, "validation": 8}}


def _pixels(name, split, i):
    rng = np.random.default_rng([list(SIZES).index(name), len(split), i])
    shape = (32, 32, 3) if name == "cifar10" else (40 + i % 3 * 8, 48, 3)
    return rng.integers(0, 256, shape, np.uint8)


class _Cifar10(cifar.Cifar10, skip_registration=True):
    name = "cifar10"

    def _split_generators(self, dl_manager):
        # As the real one does from the archive's batches.meta.txt.
        self.info.features["label"].names = CIFAR10_NAMES
        return {split: self._examples(split) for split in SIZES["cifar10"]}

    def _examples(self, split):
        for i in range(SIZES["cifar10"][split]):
            key = f"{split}_{i:05d}"
            yield key, {"id": key, "image": _pixels("cifar10", split, i), "label": i % 10}


class _ImageNet(imagenet2012_dataset_builder.Builder, skip_registration=True):
    name = "imagenet2012"
    # Its metadata (README, citation) from the real builder's package, as when it writes.
    pkg_dir_path = imagenet2012_dataset_builder.Builder._get_pkg_dir_path()  # noqa: SLF001

    def _split_generators(self, dl_manager):
        return {split: self._examples(split) for split in SIZES["imagenet2012"]}

    def _examples(self, split):
        for i in range(SIZES["imagenet2012"][split]):
            buffer = io.BytesIO()
            Image.fromarray(_pixels("imagenet2012", split, i)).save(buffer, "JPEG")
            name = f"n{i % 4:08d}_{split}_{i}.JPEG"
            buffer.seek(0)
            yield name, {"image": buffer, "label": i % 4, "file_name": name}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("tensorflow_datasets"))
    config = tfds.download.DownloadConfig(try_download_gcs=False)
    for builder in (_Cifar10, _ImageNet):
        builder(data_dir=directory).download_and_prepare(download_config=config)
    return directory


def test_a_prepared_cifar10_is_read_as_written(data_dir):
    source = pipeline.get_source("cifar10", data_dir)
    assert type(source.builder) is not _Cifar10  # the registered builder, reading files
    assert source.class_names[:3] == ["airplane", "automobile", "bird"]
    assert {s: source.num_examples(s) for s in SIZES["cifar10"]} == SIZES["cifar10"]
    read = {im.numpy().tobytes(): int(label) for im, label in source.read("test")}
    assert read == {_pixels("cifar10", "test", i).tobytes(): i % 10 for i in range(10)}
    # A label subset keeps examples by their TFDS ids: 1 per class of the training split.
    subset, counts = label_subsets.apply(source, "train", LabelSubset(per_class=1))
    kept = sorted(int(label) for _, label in subset.read("train"))
    assert kept == list(range(10)) and counts == {n: 1 for n in source.class_names}


def test_pretraining_reads_a_prepared_jpeg_dataset(data_dir, tiny, tmp_path):
    # ImageNet's records hold JPEGs: training decodes only the crops' box from each
    # (file_views); the probe is evaluated on the validation split.
    cfg = tiny(tmp_path / "run", dataset="imagenet2012", data_dir=data_dir,
               train_batch_size=4, eval_batch_size=4, train_steps=2, eval_steps=2,
               eval_split="validation")
    source = pipeline.get_source("imagenet2012", data_dir)
    assert source.reads_encoded and not pipeline.get_source("cifar10", data_dir).reads_encoded
    assert source.class_names[0] == "n01440764"  # the real builder's names file
    kept = {}
    summary = train.run(cfg, on_end=lambda model: kept.update(model=model))
    assert summary["global_step"] == 2 and np.isfinite(summary["loss"])
    # eval_steps=2 batches of 4: the whole validation split, each image's label (i % 4 of
    # the builder above) against the final model's logits, counted in NumPy.
    images, labels = zip(*pipeline.build_dataset(source, "validation", "eval", 4, 16))
    logits = np.concatenate([kept["model"](x, training=False)[ep.LOGITS_SUP].numpy()
                             for x in images])
    labels = np.concatenate(labels)
    assert logits.shape == (8, 1000)  # the real builder's classes, 4 of them used
    assert sorted(labels) == sorted(i % 4 for i in range(SIZES["imagenet2012"]["validation"]))
    # A label is in the top k when fewer than k of the 1,000 logits exceed its own; a logit
    # within 1e-5 of it (float32 rounding, the run's graph against this eager call) may
    # count either way, and makes the two ranks differ.
    own = logits[np.arange(len(labels)), labels][:, None]
    surely_above, maybe_above = np.sum(logits > own + 1e-5, 1), np.sum(logits > own - 1e-5, 1) - 1
    for k, reported in ((1, summary["top1"]), (5, summary["top5"])):
        assert np.sum(maybe_above < k) <= round(8 * reported) <= np.sum(surely_above < k), k
        assert 8 * reported == pytest.approx(round(8 * reported), abs=1e-4)  # a count of 8
