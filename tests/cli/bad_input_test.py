"""Every kind of bad or odd input: odd images train, broken ones are skipped and counted,
everything else stops with one clear line."""

import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import built_tiny_model
from PIL import Image

import simclr_tf  # noqa: F401
from simclr_tf.cli import _common
from simclr_tf.data import augment, folder
from simclr_tf.data import pipeline as data
from simclr_tf.evaluation import supervised as evaluation
from simclr_tf.runs import checkpoints
from simclr_tf.training import train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RNG = np.random.default_rng(0)


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _rgb(h=24, w=30):
    return RNG.integers(0, 256, (h, w, 3), np.uint8)


# Valid but odd images: (file name, bytes, the RGB uint8 array they must decode to, or None
# when the codec is lossy and only the shape is checked).
def _orientation(value):
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def _odd_images():
    rgb = _rgb()
    gray = RNG.integers(0, 256, (20, 16), np.uint8)
    rgba = RNG.integers(0, 256, (18, 22, 4), np.uint8)
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    deep = RNG.integers(0, 65536, (12, 14), np.uint16)
    return [
        ("gray.png", _encode(Image.fromarray(gray), "PNG"), np.repeat(gray[..., None], 3, -1)),
        ("rgba.png", _encode(Image.fromarray(rgba), "PNG"), rgba[..., :3]),
        ("palette.png", _encode(palette, "PNG"), np.asarray(palette.convert("RGB"))),
        ("deep16.png", _encode(Image.fromarray(deep), "PNG"),
         np.repeat((deep >> 8).astype(np.uint8)[..., None], 3, -1)),
        ("cmyk.jpg", _encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95), None),
        ("plain.bmp", _encode(Image.fromarray(rgb), "BMP"), rgb),
        ("still.gif", _encode(palette, "GIF"), np.asarray(palette.convert("RGB"))),
        # As phones and cameras write them: progressive, and EXIF-rotated (orientation 6:
        # decoded as stored, as TF, TFDS and PIL's Image.open give it), animated GIF (its
        # first frame), WebP (lossless: exact; RGBA: the alpha dropped).
        ("progressive.jpg", _encode(Image.fromarray(rgb), "JPEG", progressive=True), None),
        ("rotated.jpg", _encode(Image.fromarray(rgb), "JPEG", exif=_orientation(6)), None),
        ("animated.gif", _encode(palette, "GIF", save_all=True, duration=100, loop=0,
                                 append_images=[palette.rotate(90), palette.rotate(180)]),
         np.asarray(palette.convert("RGB"))),
        ("still.webp", _encode(Image.fromarray(rgb), "WEBP", lossless=True), rgb),
        ("rgba.webp", _encode(Image.fromarray(rgba), "WEBP", lossless=True), rgba[..., :3]),
        ("tiny.png", _encode(Image.fromarray(_rgb(1, 1)), "PNG"), None),
        ("huge.jpg", _encode(Image.fromarray(np.zeros((3000, 4000, 3), np.uint8)), "JPEG"),
         None),
    ]


@pytest.mark.parametrize("name,payload,expected", _odd_images(), ids=lambda x: x
                         if isinstance(x, str) else "")
def test_valid_but_odd_images_decode_to_rgb_and_train(tmp_path, name, payload, expected):
    path = tmp_path / name
    path.write_bytes(payload)
    assert folder.image_file_problem(tf.constant(payload)).numpy() == b""
    image, _ = folder.decode_file(tf.constant(str(path)), tf.constant(0))
    assert image.dtype == tf.uint8 and image.shape[-1] == 3
    if expected is not None:
        np.testing.assert_array_equal(image.numpy(), expected)
    else:  # lossy: the stored shape (an EXIF orientation is not applied)
        assert image.shape[:2] == Image.open(io.BytesIO(payload)).size[::-1]
    view = augment.preprocess_for_pretrain(image, 16, 0.5, seed=[1, 2])
    assert view.shape == (16, 16, 3) and 0.0 <= float(tf.reduce_min(view))
    assert float(tf.reduce_max(view)) <= 1.0


def _jpeg_with_a_trailer():
    """A good JPEG with bytes after its end-of-image marker, as some phones write them."""
    return _encode(Image.fromarray(_rgb()), "JPEG") + b"\x00" * 200 + b"maker data"


def _broken_files():
    """(name, bytes, why): no image at all (found from the bytes), or one that TF's decoder
    cannot read (truncated), the only judge of whether an image is whole."""
    jpeg = _encode(Image.fromarray(_rgb()), "JPEG")
    png = _encode(Image.fromarray(_rgb()), "PNG")
    gif = _encode(Image.fromarray(_rgb()).convert("P"), "GIF")
    bmp = _encode(Image.fromarray(_rgb()), "BMP")
    undecodable = "TF could not decode it"
    unknown = "not a JPEG, PNG, GIF, BMP or WebP"
    return [
        ("empty.jpg", b"", "empty file"),
        ("text.png", b"these are not the pixels you are looking for", unknown),
        ("random.jpg", RNG.integers(0, 256, 500, np.uint8).tobytes(), unknown),
        ("cut.jpg", jpeg[: len(jpeg) // 2], undecodable),
        ("cut_trailer.jpg", _jpeg_with_a_trailer()[:300], undecodable),
        ("cut.png", png[: len(png) // 2], undecodable),
        ("cut.gif", gif[: len(gif) // 2], undecodable),
        ("cut.bmp", bmp[: len(bmp) // 2], undecodable),
        ("animated.webp", _encode(Image.fromarray(_rgb()), "WEBP", save_all=True,
                                  append_images=[Image.fromarray(_rgb())], duration=100),
         "an animated WebP"),
    ]


@pytest.mark.parametrize("name,payload,reason", _broken_files(), ids=lambda x: x
                         if isinstance(x, str) and "." in x else "")
def test_each_kind_of_broken_file_is_recognised(name, payload, reason):
    problem = folder.image_file_problem(tf.constant(payload)).numpy().decode()
    if reason.startswith("TF could not"):
        assert problem == ""  # the bytes look like an image: the decoder decides
        with pytest.raises(tf.errors.InvalidArgumentError):
            tf.io.decode_image(payload, channels=3, expand_animations=False)
    else:
        assert reason in problem


def test_a_jpeg_with_bytes_after_its_end_marker_is_good():
    payload = _jpeg_with_a_trailer()
    assert folder.image_file_problem(tf.constant(payload)).numpy() == b""
    assert tf.io.decode_image(payload, channels=3).shape == (24, 30, 3)


def _good_folder(root, per_class, fmt="PNG"):
    """Classes ``a`` and ``b`` of ``per_class`` good images each; returns how many."""
    ext = {"PNG": "png", "JPEG": "jpg"}[fmt]
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            (root / c / f"{i}.{ext}").write_bytes(_encode(Image.fromarray(_rgb()), fmt))
    return 2 * per_class


def test_broken_files_in_a_folder_are_skipped_counted_and_the_first_named(tmp_path, capfd):
    root = tmp_path / "imgs"
    good = _good_folder(root, 6)
    broken = _broken_files()
    for name, payload, _ in broken:
        (root / "a" / name).write_bytes(payload)
    source = folder.FolderSource(str(root), holdout_fraction=0.5, seed=0)
    images = [im for split in ("train", "validation") for im, _ in source.read(split)]
    assert len(images) == good
    assert source.skipped == len(broken)
    err = capfd.readouterr().err
    named = [line for line in err.splitlines() if line.startswith("simclr_tf: skipping")]
    # Files the decoder dropped next to each other share a line; naming stops after 5 files.
    assert 1 <= len(named) <= folder.MAX_NAMED_SKIPS, err[-2000:]
    assert sum(line.count(str(root)) for line in named) >= folder.MAX_NAMED_SKIPS, err[-2000:]


def _png_failing_in_the_decoder():
    """A PNG with its start and end intact (it passes the byte checks) and its compressed
    pixels overwritten, so TF's decoder raises."""
    png = bytearray(_encode(Image.fromarray(_rgb()), "PNG"))
    start = png.index(b"IDAT") + 8
    png[start:start + 40] = bytes(40)
    payload = bytes(png)
    assert folder.image_file_problem(tf.constant(payload)).numpy() == b""
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.io.decode_image(payload)
    return payload


def test_files_that_fail_in_the_decoder_are_skipped_counted_and_named(tmp_path, capfd):
    root = tmp_path / "imgs"
    _good_folder(root, 3)
    bad = [root / "a" / "0_first.png", root / "a" / "1_middle.png", root / "b" / "9_last.png"]
    for path in bad:  # the first, one in the middle and the last file read
        path.write_bytes(_png_failing_in_the_decoder())
    source = folder.FolderSource(str(root), holdout_fraction=0.5, seed=0)
    read = [list(source.read(split)) for split in ("train", "validation")]
    assert sum(len(r) for r in read) == 6
    assert source.skipped == 3
    err = capfd.readouterr().err
    named = [line for line in err.splitlines() if line.startswith("simclr_tf: skipping")
             and line.endswith("- TF could not decode it (truncated or corrupt)")]
    for path in bad:  # (files dropped next to each other share a line)
        assert any(str(path) in line for line in named), err[-2000:]
    # In the training pipeline too (shuffled, repeated, two views): over several epochs each
    # broken file is counted once.
    fresh = folder.FolderSource(str(root), holdout_fraction=0.5, seed=0)
    ds = data.build_dataset(fresh, "train", "pretrain", 2, 16, seed=0)
    for _ in zip(range(20), ds):  # 6 epochs of the 3-4 training files
        pass
    train_broken = sum(str(p) in " ".join(fresh.file_names("train")) or
                       os.path.relpath(p, root) in list(fresh.file_names("train")) for p in bad)
    assert fresh.skipped == train_broken > 0


SMALL = dict(train_batch_size=4, eval_batch_size=4, train_steps=2)  # on top of tiny()


def _cli(*args):
    proc = subprocess.run([sys.executable, "-m", "simclr_tf.cli.pretrain", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""


@pytest.mark.parametrize("args,message", [
    (["--train_batch_size=0"], "--train_batch_size=0 must be >= 1"),
    (["--temperature=0"], "--temperature=0.0 must be > 0"),
    (["--image_size=0"], "--image_size=0 must be >= 1"),
    (["--proj_head_mode=mlp"], "--proj_head_mode"),
    (["--optimizer=sgd"], "--optimizer"),
    (["--strategy=gpu"], "--strategy"),
    (["--dataset=imagenet_typo"], "unknown dataset 'imagenet_typo'"),
    (["--dataset=cifar10", "--data_dir=EMPTY"], "is not prepared"),
    (["--flagfile=flags/no_such.flags"], "no_such.flags"),
    (["--dataset=folder", "--data_dir=EMPTY"], "does not exist"),
])
def test_bad_command_lines_end_with_one_clear_line(tmp_path, args, message):
    args = [a.replace("EMPTY", str(tmp_path / "nothing_here")) for a in args]
    code, last = _cli("--flagfile=flags/smoke.flags", f"--model_dir={tmp_path / 'run'}", *args)
    assert code == 2 and last.startswith("simclr-pretrain: error:") and message in last, last


def test_finetune_from_a_checkpoint_that_does_not_exist(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "simclr_tf.cli.finetune", "--flagfile=flags/smoke.flags",
         "--train_mode=finetune", f"--model_dir={tmp_path / 'ft'}",
         f"--checkpoint={tmp_path / 'nowhere'}"], cwd=ROOT, capture_output=True, text=True,
        timeout=600)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "does not exist" in last and "nowhere" in last, last


def test_checkpoint_errors_name_the_path_and_the_variables(tiny, tmp_path):
    base = dict(SMALL, lineareval_while_pretraining=False)
    with pytest.raises(ValueError, match="does not exist"):
        checkpoints.resolve(str(tmp_path / "nowhere"))
    pre = tmp_path / "pre"
    train.run(tiny(pre, **base))
    with pytest.raises(ValueError, match="has no supervised head .* simclr-finetune --linear_eval"):
        evaluation.evaluate(tiny(pre, **base))
    with pytest.raises(ValueError, match="holds no checkpoint; give the folder of a run"):
        _common.run_checkpoint(tiny(tmp_path / "empty", **base), set())
    other = tiny(tmp_path / "ft", train_mode="finetune", checkpoint=str(pre),
                 **dict(base, width_multiplier=0.5))
    with pytest.raises(ValueError) as info:
        train.run(other)
    message = str(info.value)
    assert "another architecture" in message
    assert "differ in shape: model/encoder/" in message and "kernel is [" in message
    assert "kernel is [3, 3, 16, 16] in the checkpoint, [3, 3, 32, 32] here" in message


def test_model_dir_that_cannot_be_written(tiny, tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions: use a path under a file
            target = tmp_path / "afile"
            target.write_text("x")
            model_dir = str(target / "run")
        else:
            model_dir = str(locked / "run")
        with pytest.raises(ValueError, match="cannot be created or written"):
            train.run(tiny(model_dir, **SMALL))
    finally:
        locked.chmod(0o700)


def test_export_given_the_wrong_channel_count_says_so(tmp_path):
    from simclr_tf.runs import export as export_lib
    model = built_tiny_model()
    path = export_lib.export_model(model, str(tmp_path / "export"))
    loaded = tf.saved_model.load(path)
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError),
                       match=r"(?s)but are 3 and 1.*images_must_be_float_RGB_batch_height"):
        loaded(tf.zeros([2, 16, 16, 1]))
    out = loaded(tf.zeros([2, 24, 24, 3]))  # another size is fine: the encoder is convolutional
    assert out["final_avg_pool"].shape == (2, 128)


def _cut(path, fraction=0.5):
    with open(path, "rb") as f:
        payload = f.read()
    with open(path, "wb") as f:
        f.write(payload[:int(len(payload) * fraction)])


def test_savedmodels_that_are_not_the_original_s_are_named_in_one_line(
        original_r18_savedmodel, tmp_path):
    import shutil

    import tf_keras as keras

    from simclr_tf.interop import convert
    _, original, _, _ = original_r18_savedmodel
    expected = "expected the original SimCLR tf2 code's export"
    # A Keras classifier as Keras saves it, and inside the original's export object.
    classifier = keras.Sequential([keras.layers.Conv2D(4, 3),
                                   keras.layers.GlobalAveragePooling2D(),
                                   keras.layers.Dense(3)])
    classifier(tf.zeros([1, 8, 8, 3]))
    classifier.save(str(tmp_path / "keras"), save_format="tf")
    root = tf.Module()
    root.model, root.trainable_variables_list = classifier, classifier.trainable_variables
    tf.saved_model.save(root, str(tmp_path / "classifier"))
    for name, found in (("keras", "found top-level objects ['layer-0'"),
                        ("classifier", "found top-level objects ['model', "
                         "'trainable_variables_list'], model/ holding ['layer-0'")):
        with pytest.raises(ValueError, match=rf"another program's SavedModel: {expected}.*"
                                             rf"{re.escape(found)}"):
            convert.open_original(str(tmp_path / name))
    # Copied in part: the variables' data, their index, or no variables at all.
    for part, message in (("data-00000-of-00001", "cannot be read"),
                          ("index", r"cannot be read \(not an sstable"),
                          (None, "holds saved_model.pb but no variables/variables.index")):
        damaged = str(tmp_path / f"cut_{part}")
        shutil.copytree(original, damaged)
        if part:
            _cut(os.path.join(damaged, "variables", f"variables.{part}"))
        else:
            shutil.rmtree(os.path.join(damaged, "variables"))
        with pytest.raises(ValueError, match=rf"^{re.escape(damaged)}.*{message}"):
            convert.load_original(damaged)
    # The program: one line, exit 2 (the variables' data cut after the object graph).
    damaged = str(tmp_path / "cut_late")
    shutil.copytree(original, damaged)
    _cut(os.path.join(damaged, "variables", "variables.data-00000-of-00001"), 0.9)
    proc = subprocess.run([sys.executable, "-m", "simclr_tf.cli.convert",
                           f"--original={damaged}", f"--model_dir={tmp_path / 'out'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"simclr-convert: error: {damaged}") and "whole" in last, last
    assert not os.path.exists(tmp_path / "out" / "checkpoint")


def test_outputs_never_replace_a_user_s_file_or_folder(original_r18_savedmodel, tmp_path):
    from simclr_tf.core.config import Config
    from simclr_tf.interop import convert
    from simclr_tf.runs import export as export_lib
    precious = tmp_path / "notes.txt"
    precious.write_text("a user's file")
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "photo.jpg").write_bytes(b"not ours")
    _, original, _, _ = original_r18_savedmodel
    before = sorted(os.listdir(original))
    # The programs, each with one of its outputs on the file: one line, exit 2.
    runs = [("export", [f"--model_dir={tmp_path / 'run'}", f"--export_dir={precious}"],
             f"--export_dir='{precious}' is a file"),
            ("export", [f"--model_dir={tmp_path / 'run'}", f"--export_dir={mine}"],
             f"--export_dir='{mine}' holds 2 file(s) or folder(s) (e.g. 'photo.jpg')"),
            ("visualize", [f"--hub_module={original}", f"--output_dir={precious}"],
             f"--output_dir='{precious}' is a file"),
            ("transfer", [f"--hub_module={original}", "--datasets=cifar10",
                          f"--output_dir={precious}"], f"--output_dir='{precious}' is a file")]
    procs = [subprocess.Popen([sys.executable, "-m", f"simclr_tf.cli.{prog}", *args], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for prog, args, _ in runs]
    for (prog, _, message), proc in zip(runs, procs):
        _, err = proc.communicate(timeout=600)
        last = err.strip().splitlines()[-1]
        assert proc.returncode == 2 and last.startswith(f"simclr-{prog}: error: ") and \
            message in last, err[-2000:]
    # The library: an export replaces only an export of its own.
    model = built_tiny_model()
    for target in (precious, mine, original):  # the original's SavedModel is not ours
        with pytest.raises(ValueError, match="is a file|is not an export of simclr_tf"):
            export_lib.export_model(model, str(target))
    ours = str(tmp_path / "export")
    (tmp_path / "export").mkdir()  # an empty folder is taken
    export_lib.export_model(model, ours)
    assert export_lib.is_export(ours) and not export_lib.is_export(original)
    export_lib.export_model(model, ours)  # an export of its own is replaced
    with pytest.raises(ValueError, match="--model_dir=.*is a file"):
        convert.convert_checkpoint(original, Config(model_dir=str(precious)))
    assert precious.read_text() == "a user's file"
    assert sorted(os.listdir(mine)) == ["photo.jpg", "sub"]
    assert sorted(os.listdir(original)) == before


def test_files_that_are_no_images_this_reads_are_counted_by_kind(tmp_path, caplog):
    # A phone's folder: HEIC photos and videos beside JPEGs and WebPs.
    root = tmp_path / "phone"
    _good_folder(root, 2, "JPEG")
    (root / "a" / "3.webp").write_bytes(_encode(Image.fromarray(_rgb()), "WEBP"))
    for name in ("IMG_0001.HEIC", "IMG_0002.heic", "clip.MOV", "notes"):
        (root / "b" / name).write_bytes(b"...")
    with caplog.at_level("WARNING"):
        source = folder.FolderSource(str(root), holdout_fraction=0.5, seed=0)
    assert source.num_examples("train") + source.num_examples("validation") == 5
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert f"Skipped 4 files under {root} that are no images this reads (.heic: 2, .mov: 1, " \
        "(no extension): 1)" in warning, warning


def _foreign_savedmodel(path):
    """Another program's SavedModel: a tf.Module as ``tf.saved_model.save`` writes it."""
    module = tf.Module()
    module.w = tf.Variable(tf.ones([3, 4]))
    module.f = tf.function(lambda x: tf.reduce_mean(x, [1, 2]) @ module.w,
                           input_signature=[tf.TensorSpec([None, None, None, 3])])
    tf.saved_model.save(module, str(path), signatures=module.f)
    return str(path)


@pytest.fixture(scope="module")
def damaged(trained_run, tmp_path_factory):
    """{kind: path}: another program's SavedModel, the shared run's export with its variables
    cut in half, and a copy of the run with its newest checkpoint's data cut in half."""
    import shutil  # noqa: PLC0415

    cfg, summary = trained_run
    root = tmp_path_factory.mktemp("damaged")
    export = str(root / "export")
    shutil.copytree(summary["saved_model"], export)
    _cut(os.path.join(export, "variables", "variables.data-00000-of-00001"))
    run = str(root / "run")
    shutil.copytree(cfg.model_dir, run)
    _cut(os.path.join(run, "ckpt-4.data-00000-of-00001"))
    return {"foreign": _foreign_savedmodel(root / "foreign"), "export": export, "run": run}


CUT_EXPORT = r"variables/variables.data-00000-of-00001 is cut short: [\d,]+ bytes where its index"
CUT_RUN = r"ckpt-4.data-00000-of-00001 is cut short: [\d,]+ bytes where its index"
FOREIGN = r"is a SavedModel of another program, not an export of simclr_tf: its root holds f, "


def test_every_reader_of_an_export_or_a_run_names_what_is_wrong(damaged, tiny, tmp_path):
    from simclr_tf.models import simclr_model as model_lib  # noqa: PLC0415
    from simclr_tf.runs import loader  # noqa: PLC0415
    from simclr_tf.training import distill  # noqa: PLC0415

    readers = {  # the programs' ways in: each names the flag, the path and what is wrong
        "finetune --hub_module": lambda p: model_lib.from_config(
            tiny(tmp_path, train_mode="finetune", hub_module=p), 10),
        "transfer/visualize --hub_module": lambda p: _common.run_model(
            tiny(tmp_path, hub_module=p), set()),
        "distill --teacher": lambda p: distill.load_teacher(p, tf.distribute.get_strategy()),
    }
    for name, read in readers.items():
        flag = name.split()[-1].split("=")[0]
        for kind, message in (("foreign", FOREIGN), ("export", CUT_EXPORT)):
            path = damaged[kind]
            with pytest.raises(ValueError, match=rf"^{flag}={re.escape(repr(path))}.*{message}"):
                read(path)
    # A run whose newest checkpoint is cut: eval, export, finetune --checkpoint, the teacher.
    run = tiny(damaged["run"])
    for read in (lambda: evaluation.evaluate(run),
                 lambda: _common.run_model(run, set()),
                 lambda: checkpoints.restore_pretrained(built_tiny_model(), damaged["run"]),
                 lambda: loader.load(damaged["run"], "--teacher")):
        with pytest.raises(ValueError, match=rf"^cannot restore .*{CUT_RUN}"):
            read()
    # Fine-tuning from it, or from the others: refused before its model_dir is made.
    for start, message in (({"checkpoint": damaged["run"]}, CUT_RUN),
                           ({"hub_module": damaged["foreign"]}, FOREIGN)):
        with pytest.raises(ValueError, match=rf"^--{next(iter(start))}=.*{message}"):
            train.run(tiny(tmp_path / "ft", train_mode="finetune", **start))
        assert not os.path.exists(tmp_path / "ft")


def _study_begun_with_4_steps(root, monkeypatch):
    """``root``: the temperature study begun by the real code with smoke.flags' 4 steps, its
    cells' training faked (each writes the summary.json a finished run leaves)."""
    import json  # noqa: PLC0415

    from simclr_tf.cli import flags as cli_flags  # noqa: PLC0415
    from simclr_tf.tools import ablation, ablation_studies  # noqa: PLC0415

    def finished(cfg, **_):
        os.makedirs(cfg.model_dir, exist_ok=True)
        with open(os.path.join(cfg.model_dir, train.SUMMARY_FILE), "w") as f:
            json.dump({"top1": 0.5, "global_step": cfg.train_steps}, f)

    cfg = cli_flags.from_flagfile(os.path.join(ROOT, "flags/smoke.flags"), model_dir=str(root))
    study = ablation_studies.get("temperature", "t0.1")
    with monkeypatch.context() as patched:  # only for this study
        patched.setattr(train, "run", finished)
        ablation.run(study, cfg, ablation.LinearSettings(200, 0.2, 256))  # the program's


def test_the_six_inputs_of_issue_37_end_in_one_line(damaged, tiny, tmp_path, monkeypatch):
    from simclr_tf.interop import convert  # noqa: PLC0415
    from simclr_tf.tools import ablation, ablation_studies  # noqa: PLC0415

    notes = tmp_path / "notes.txt"
    notes.write_text("what I tried\n")
    study = tmp_path / "study"
    _study_begun_with_4_steps(study, monkeypatch)
    smoke = "--flagfile=flags/smoke.flags"
    finetune = [smoke, "--train_mode=finetune", "--fine_tune_after_block=-1"]
    # Two programs as a user runs them (each start costs seconds of imports); the other four
    # inputs through the same library calls, in this process.
    cases = [
        ("finetune", [*finetune, f"--hub_module={damaged['foreign']}",
                      f"--model_dir={tmp_path / 'ft_foreign'}"], FOREIGN),
        ("ablate", ["--study=temperature", smoke, "--train_steps=8", f"--model_dir={study}"],
         r"holds --study=temperature begun with other flags \(--train_steps=4 then, "
         r"--train_steps=8 now\): a resumed study keeps its first flags"),
    ]
    procs = [subprocess.Popen([sys.executable, "-m", f"simclr_tf.cli.{prog}", *args], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for prog, args, _ in cases]  # at once: each waits mostly on its imports
    for (prog, _, message), proc in zip(cases, procs):
        _, err = proc.communicate(timeout=600)
        last = err.strip().splitlines()[-1] if err.strip() else ""
        assert proc.returncode == 2 and "Traceback" not in err, err[-3000:]
        assert re.match(rf"simclr-{prog}: error: .*{message}", last), last
    assert not os.path.exists(tmp_path / "ft_foreign")  # refused before any work
    with pytest.raises(ValueError, match=r"^--original='.*notes.txt' is a text file of 13 bytes "
                                         r"starting 'what I tried', not a model of the original"):
        convert.open_original(str(notes))
    with pytest.raises(ValueError, match=r"^--budget_minutes=1e\+30 is out of range: give "
                                         r"minutes in \(0, 43200\]"):
        ablation.run(ablation_studies.get("temperature"), tiny(tmp_path / "budget"),
                     ablation.LinearSettings(2, 0.2, 8), budget_minutes=1e30)
    with pytest.raises(ValueError, match=rf"^--hub_module=.*{CUT_EXPORT}"):
        train.run(tiny(tmp_path / "ft_cut", train_mode="finetune",
                       hub_module=damaged["export"]))
    for refused in ("ft_cut", "budget"):
        assert not os.path.exists(tmp_path / refused), refused
    assert sorted(os.listdir(study)) == ["ablation.md", "ablation.png", "study.json", "t0.1"]
