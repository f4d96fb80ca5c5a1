"""simclr-visualize: every picture written, of the size its grid implies and not blank, for a
run (the program) and for an export; the neighbours, the 2-D map and the curves' numbers
checked against independent computations."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from simclr_tf.data import view_pairs as views_lib
from simclr_tf.tools import pictures, visualize

PICTURES = ("views.png", "embedding.png", "retrieval.png", "curves.png")


def _pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), np.float64)


def _check_picture(path, min_size):
    pixels = _pixels(path)
    height, width = pixels.shape[:2]
    assert height >= min_size[0] and width >= min_size[1], (path, pixels.shape)
    assert pixels.std() > 10, f"{path} is (nearly) one colour"
    # Many distinct colours: images and coloured points, not only text on white.
    assert len(np.unique(pixels.reshape(-1, 3)[::7], axis=0)) > 50, path
    return pixels


@pytest.fixture()
def run_dir(trained_run):
    """The shared trained run (conftest: the kNN monitor, an export, its flags.txt)."""
    cfg, summary = trained_run
    return pathlib.Path(cfg.model_dir), summary


def test_the_program_draws_a_run(run_dir, tmp_path):
    model_dir, summary = run_dir
    out = tmp_path / "pictures"
    done = subprocess.run(
        [sys.executable, "-m", "simclr_tf.cli.visualize", f"--model_dir={model_dir}",
         f"--output_dir={out}", "--num_points=120", "--embedding_method=tsne"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "simclr-visualize: wrote" in done.stdout
    # views: 6 originals and 3 pairs = 7 columns of ~130 px, 6 rows of ~140 px.
    _check_picture(out / "views.png", (6 * 100, 7 * 100))
    _check_picture(out / "embedding.png", (400, 500))
    _check_picture(out / "retrieval.png", (6 * 100, 7 * 100))
    _check_picture(out / "curves.png", (400, 600))
    assert sorted(os.listdir(out)) == sorted(PICTURES)

    # TensorBoard got the view grid at step 0: 2 rows of views of 8 images at 16 px.
    grids = [(event.step, value) for path in (model_dir / "train").glob("events.out.*")
             for event in tf.compat.v1.train.summary_iterator(str(path))
             for value in event.summary.value if value.tag == "augmented_views"]
    assert [step for step, _ in grids] == [0]
    grid = tf.io.decode_png(tf.make_ndarray(grids[0][1].tensor)[2]).numpy()
    assert grid.shape == (2 * 16, 8 * 16, 3) and grid.std() > 10

    series = visualize.read_scalars(str(model_dir))
    assert set(series["eval/knn_top1"]) == {0, 2, 4}
    assert series["eval/knn_top1"][4] == pytest.approx(summary["knn_top1"], abs=1e-6)
    with open(model_dir / "summary.json") as f:
        assert json.load(f)["global_step"] == max(series["train/loss"])


def test_an_export_alone_draws_what_needs_no_run(run_dir, tmp_path):
    from simclr_tf.cli import flags as cli_flags
    from simclr_tf.data import pipeline as data_lib

    model_dir, summary = run_dir
    cfg = cli_flags.from_flagfile(str(model_dir / "flags.txt"))
    export = tf.saved_model.load(summary["saved_model"])
    written = visualize.draw(str(tmp_path), cfg, data_lib.get_source("shapes"),
                             visualize.model_features(export), None,
                             visualize.Options(num_points=60, method="pca"), "export")
    assert sorted(os.path.basename(p) for p in written) == sorted(PICTURES[:3])
    for name in PICTURES[:3]:
        _check_picture(tmp_path / name, (300, 300))


def test_nearest_equals_a_brute_force_search():
    rng = np.random.default_rng(0)
    features = rng.normal(size=[30, 5])
    index, similarity = visualize.nearest(features, np.array([3, 17]), 4)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    for row, q in enumerate([3, 17]):
        others = [(unit[q] @ unit[j], j) for j in range(30) if j != q]
        best = sorted(others, reverse=True)[:4]
        assert list(index[row]) == [j for _, j in best]
        np.testing.assert_allclose(similarity[row], [s for s, _ in best], rtol=1e-12)


def test_pca_map_keeps_the_two_main_directions():
    rng = np.random.default_rng(1)
    # Spread 10 along x, 3 along y, 0.1 along four other axes.
    features = rng.normal(size=[200, 6]) * [10, 3, 0.1, 0.1, 0.1, 0.1]
    points, method = pictures.project_2d(features, "pca")
    assert method == "pca"
    np.testing.assert_allclose(np.abs(np.corrcoef(points[:, 0], features[:, 0])[0, 1]), 1,
                               atol=1e-3)
    np.testing.assert_allclose(np.abs(np.corrcoef(points[:, 1], features[:, 1])[0, 1]), 1,
                               atol=1e-2)
    with pytest.raises(ValueError, match="embedding_method='mds'"):
        pictures.project_2d(features, "mds")


def test_the_views_are_of_the_originals_beside_them(tmp_path):
    """A folder of one-colour images (its training input shuffles the files): with no colour
    jitter, every view is its original's colour, or that colour's grey (random grayscale)."""
    from simclr_tf.core.config import Config
    from simclr_tf.data import folder

    rng = np.random.default_rng(3)
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(6):
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            Image.new("RGB", (20 + i, 18), colour).save(tmp_path / c / f"{i}.png")
    cfg = Config(model_dir=str(tmp_path), dataset="folder", data_dir=str(tmp_path),
                 image_size=8, color_jitter_strength=0.0, use_blur=False, seed=1)
    originals, views = views_lib.view_pairs(cfg, folder.FolderSource(str(tmp_path), seed=1),
                                            num_images=5, num_pairs=3)
    for original, row in zip(originals, views):
        colour = original.reshape(-1, 3).mean(0)
        grey = np.dot(colour, [0.2989, 0.5870, 0.1140])
        for view in row.reshape(-1, 8 * 8, 3):
            mean = view.mean(0)
            assert np.allclose(mean, colour, atol=0.02) or np.allclose(mean, grey, atol=0.02), \
                (mean, colour)


def _write_scalars(run, values):
    writer = tf.summary.create_file_writer(str(run / "train"))
    with writer.as_default():
        for step, value in values.items():
            tf.summary.scalar("loss", value, step=step)
    writer.close()


def test_compared_runs_share_the_panels_of_curves_png(tmp_path):
    first, second = tmp_path / "a" / "run", tmp_path / "b" / "run"
    _write_scalars(first, {1: 5.0, 2: 4.0, 3: 3.5})
    _write_scalars(second, {1: 5.0, 2: 4.5, 3: 4.2})
    assert visualize._label(str(first), [str(first), str(second)]) == "a/run"
    assert visualize._label(str(tmp_path / "k4"), [str(first), str(tmp_path / "k4")]) == "k4"
    out = tmp_path / "out"
    out.mkdir()
    written = visualize._curves(str(out), str(first), [str(second)])
    assert written == [str(out / "curves.png")]
    pixels = _pixels(out / "curves.png").reshape(-1, 3)
    # matplotlib's first two line colours, the two runs' curves: blue then orange
    for rgb in ((31, 119, 180), (255, 127, 14)):
        assert (np.abs(pixels - rgb).sum(axis=1) < 30).sum() > 50, rgb
    alone = tmp_path / "alone"
    alone.mkdir()
    visualize._curves(str(alone), str(first), [])
    orange = (np.abs(_pixels(alone / "curves.png").reshape(-1, 3) - (255, 127, 14)).sum(1) < 30)
    assert orange.sum() == 0  # one run: one colour
    with pytest.raises(ValueError, match=r"--compare_dirs: .*empty has no training summaries"):
        visualize._curves(str(out), str(first), [str(tmp_path / "empty")])
