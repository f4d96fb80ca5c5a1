"""simclr-bench: its FLOP count against hand counts, and the figures it reports."""

import dataclasses
import itertools
import json
import os
import re
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import simclr_tf  # noqa: F401
from simclr_tf.bench import loss_scaling, step_variants, suite
from simclr_tf.core import config as config_lib
from simclr_tf.models import simclr_model as model_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_flops_of_one_convolution_are_two_per_multiply_add():
    conv = keras.Sequential([keras.Input([8, 8, 3]),
                             keras.layers.Conv2D(4, 3, padding="same", use_bias=False)])
    assert step_variants.forward_flops(conv, 8) == 2 * (8 * 8 * 4) * (3 * 3 * 3)


def _resnet18_cifar_macs(width, size, proj_dims, num_classes):
    """Multiply-adds of the convolutions and dense layers, from the layout (docs/method.md)."""
    macs, c_in, s = 0, 3, size
    stem = int(64 * width)
    macs += s * s * stem * 9 * c_in  # 3x3/1 stem
    c_in = stem
    for group, stride in zip((64, 128, 256, 512), (1, 2, 2, 2)):
        c = int(group * width)
        for block in range(2):
            st = stride if block == 0 else 1
            s_out = s // st
            if block == 0:
                macs += s_out * s_out * c * c_in  # 1x1 projection shortcut
            macs += s_out * s_out * c * 9 * c_in  # 3x3 (with the stride)
            macs += s_out * s_out * c * 9 * c     # 3x3
            c_in, s = c, s_out
    dims = [c_in, *proj_dims]
    macs += sum(a * b for a, b in zip(dims, dims[1:]))
    return macs + c_in * num_classes  # the linear head reads the encoder output


@pytest.mark.parametrize("matmul_convs", [True, False])  # both paths the step can take
def test_resnet18_flops_match_the_layout(matmul_convs):
    model = model_lib.build_model(resnet_depth=18, width_multiplier=0.5, image_size=32,
                                  proj_head_mode="nonlinear", num_proj_layers=2,
                                  proj_out_dim=64, num_classes=10,
                                  matmul_small_convs=matmul_convs)
    model(tf.zeros([1, 32, 32, 3]), training=False)
    counted = step_variants.forward_flops(model, 32)
    expected = 2 * _resnet18_cifar_macs(0.5, 32, [256, 64], 10)
    # The profiler also counts the cheap element-wise work (batch norm, adds): < 2% here.
    assert expected <= counted <= 1.02 * expected, (counted, expected)


def test_bench_program_reports_consistent_figures():
    cmd = [sys.executable, "-m", "simclr_tf.cli.bench", "--json", "--resnet_depth=18",
           "--width_multiplier=0.25", "--image_size=16", "--train_batch_size=8",
           "--eval_batch_size=8", "--timed_runs=1", "--steps_per_run=1", "--input_seconds=1",
           "--eval_seconds=1", "--source_height=40", "--source_width=48",
           "--variants=sync_bn_one_replica"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("matmul_gflops", "utilisation", "input_views_per_sec", "input_to_train_ratio",
                "eval_views_per_sec", "variant_sync_bn_one_replica_utilisation"):
        assert key in result, key  # their arithmetic: on fixed timings and clocks below
    # What the step measured, from what it ran: 8 images as 2 views each per step, and
    # 3 x the forward FLOPs (forward + backward) of the layout counted by hand per view
    # (the 3-layer head at 128 and the probe on 10 classes; the profiler adds the
    # element-wise work, 0.1% here).
    seconds = result["train_step_seconds"]
    assert result["train_views_per_sec"] * seconds == pytest.approx(16, rel=1e-9)
    by_hand = 3 * 2 * _resnet18_cifar_macs(0.25, 16, [128, 128, 128], 10) * 16 / 1e9
    assert by_hand <= result["step_gflop"] <= 1.01 * by_hand, (result["step_gflop"], by_hand)
    assert result["train_gflops"] * seconds == pytest.approx(result["step_gflop"], rel=1e-9)
    # A variant does the default step's work (the same FLOPs per view).
    name = "sync_bn_one_replica"
    assert result[f"variant_{name}_gflops"] / result[f"variant_{name}_views_per_sec"] == \
        pytest.approx(result["train_gflops"] / result["train_views_per_sec"], rel=0.02)


def _fake_clock(monkeypatch, module):
    """``module``'s ``time.perf_counter`` made a clock that moves only by ``advance(s)``."""
    now = [0.0]
    monkeypatch.setattr(module, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))

    def advance(seconds):
        now[0] += seconds
    return advance


def test_items_per_second_are_the_items_counted_over_the_seconds_timed(monkeypatch):
    # Each batch of 16 takes 0.375 s. Warm-up: min(3, 2 / 2) = 1 s, batches until then (3);
    # timed: batches until 2 s have passed: 6, that is 96 items in 2.25 s, 42.67 items/s.
    advance = _fake_clock(monkeypatch, suite)

    def per_batch(batch):
        advance(0.375)
        return batch

    assert suite._iterate_for(itertools.repeat(16), 2.0, per_batch) == pytest.approx(96 / 2.25)


def test_input_counts_views_and_evaluation_counts_images(monkeypatch):
    # What each measure counts per batch (its rate is _iterate_for's, above): the input
    # pipeline 2 views of each of the 4 images of a batch, evaluation each of its 6 images.
    monkeypatch.setattr(suite, "_iterate_for",
                        lambda ds, seconds, per_batch: per_batch(next(iter(ds))))
    cfg = config_lib.Config(model_dir="unused", resnet_depth=18, width_multiplier=0.25,
                            image_size=16, train_batch_size=4, eval_batch_size=6,
                            calibrate_kernels=False)
    options = suite.Options(source_images=8, source_height=20, source_width=24)
    assert suite.measure_input(cfg, options) == 8
    assert suite.measure_eval(cfg, options) == 6


def test_utilisation_is_the_step_over_the_mean_of_the_matmul_peaks(monkeypatch):
    # The 2048^3 matmul (2 x 2048^3 = 17.18 GFLOP) in 0.5 s before the step and 0.25 s
    # after: 34.36 and 68.72 GFLOP/s, a peak of 51.54; the step at 12 GFLOP/s is 23.3% of
    # it, a variant at 6 GFLOP/s 11.6%.
    matmul_seconds = iter([0.5, 0.25])
    monkeypatch.setattr(suite, "_median_time", lambda fn, warmup, runs: next(matmul_seconds))
    monkeypatch.setattr(step_variants, "measure_with_variants",
                        lambda cfg, strategy, options, report: {"train_gflops": 12.0,
                                                                "variant_v_gflops": 6.0})
    result = suite._measure_steps(config_lib.Config(model_dir="unused"), None,
                                  suite.Options(variants=("v",)), lambda _: None)
    gflop = 2 * 2048 ** 3 / 1e9
    assert (result["matmul_gflops_before"], result["matmul_gflops_after"]) == pytest.approx(
        (gflop / 0.5, gflop / 0.25))
    assert result["matmul_gflops"] == pytest.approx(3 * gflop)  # (1 / 0.5 + 1 / 0.25) / 2
    assert result["utilisation"] == pytest.approx(12.0 / 51.54, rel=1e-4)
    assert result["variant_v_utilisation"] == pytest.approx(6.0 / 51.54, rel=1e-4)


def test_the_step_figures_from_fixed_timings():
    # 2 steps of 16 views per call, 3e9 FLOPs per step; calls of 0.5, 0.4 and 0.6 s are
    # steps of 0.25, 0.2 and 0.3 s: the median 0.25 s gives 64 views/s, the slowest
    # 16 / 0.3 = 53.3, the fastest 80; 3 GFLOP / 0.25 s = 12 GFLOP/s.
    step = step_variants.PreparedStep(call=None, steps=2, views=16, flops=3e9)
    got = step_variants.figures(step, [0.5, 0.4, 0.6])
    assert got == pytest.approx({"train_views_per_sec": 64.0, "train_step_seconds": 0.25,
                                 "train_views_per_sec_min": 16 / 0.3,
                                 "train_views_per_sec_max": 80.0, "train_gflops": 12.0,
                                 "step_gflop": 3.0})


def test_variant_ratios_are_of_calls_side_by_side(monkeypatch):
    # Rounds of (default, variant) calls: (1.0, 0.5), (2.0, 0.5), (1.2, 1.2): ratios 2, 4, 1;
    # the median 2, min 1, max 4, whatever the medians of each alone give (1.2 / 0.5 = 2.4).
    steps = {"": step_variants.PreparedStep(None, 1, 8, 1e9),
             "v": step_variants.PreparedStep(None, 1, 8, 1e9)}
    monkeypatch.setattr(step_variants, "VARIANTS", {"v": {"seed": 1}})  # the variant's config
    monkeypatch.setattr(step_variants, "prepare_step",
                        lambda cfg, strategy, n, sync_bn=None: steps["v" if cfg.seed else ""])
    monkeypatch.setattr(step_variants, "interleaved_times", lambda s, warmup, rounds: {
        "": [1.0, 2.0, 1.2], "v": [0.5, 0.5, 1.2]})
    options = type("Options", (), {"steps_per_run": 1, "variants": ["v"], "warmup_runs": 0,
                                   "timed_runs": 3})()
    result = step_variants.measure_with_variants(config_lib.Config(seed=0, train_batch_size=4),
                                                 None, options, lambda line: None)
    assert result["variant_v_ratio"] == pytest.approx(2.0)
    assert (result["variant_v_ratio_min"], result["variant_v_ratio_max"]) == (1.0, 4.0)
    assert result["variant_v_views_per_sec"] == pytest.approx(8 / 0.5)
    assert result["train_views_per_sec"] == pytest.approx(8 / 1.2)


@pytest.mark.parametrize("arg,message", [
    ("--parts=step,gpu", "unknown benchmark parts ['gpu']"),
    ("--variants=fast", "unknown step variants ['fast']"),
    ("--scaling_batches=256,x", "--scaling_batches=256,x must be positive integers"),
    ("--repeat=0", "--repeat=0 must be >= 1"),
])
def test_bench_rejects_unknown_parts_and_variants(arg, message):
    proc = subprocess.run([sys.executable, "-m", "simclr_tf.cli.bench", arg],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2
    assert message in proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("variant,sync_bn,matmul_convs", [
    ("default", False, True), ("stock_convs", False, False),
    ("sync_bn_one_replica", True, True), ("sync_bn_stock_convs", True, False)])
def test_step_variants_build_the_step_they_name(variant, sync_bn, matmul_convs):
    cfg = config_lib.Config(train_mode="pretrain", resnet_depth=18, width_multiplier=0.25,
                            image_size=16, model_dir="<unused>", calibrate_kernels=False)
    model = model_lib.from_config(dataclasses.replace(cfg, **step_variants.VARIANTS[variant]),
                                  None,
                                  sync_bn=True if variant.startswith("sync_bn_") else None)
    bns = [layer for layer in model.submodules
           if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(bn.synchronized == sync_bn for bn in bns)
    trace = tf.function(lambda x: model(x, training=True)).get_concrete_function(
        tf.TensorSpec([4, 16, 16, 3]))
    ops = {op.type for op in trace.graph.get_operations()}
    assert ("GatherV2" in ops) == matmul_convs  # the 2 x 2 block group's convolutions


def test_loss_scaling_measures_the_logits_memory_and_the_loss_share_of_the_step():
    cfg = config_lib.Config(model_dir="unused", proj_out_dim=16, temperature=0.5)
    options = suite.Options(timed_runs=2, scaling_batches=(256, 512), step_max_batch=256)
    held = []

    def fake_step(step_cfg, strategy, one):  # holds 8 MiB while it runs: the peak sees it
        assert step_cfg.train_batch_size == 256 and one.steps_per_run == 1
        held.append(tf.ones([2 * 2 ** 20]) + 0.0)
        return {"train_step_seconds": 0.5}

    result = loss_scaling.run(cfg, tf.distribute.get_strategy(), options, lambda _: None,
                              fake_step)
    for n in (256, 512):
        # NT-Xent holds at least its [N, N] similarity blocks and their [N, 2N] concatenation
        # (16 N^2 bytes) at once, and far less than 16 such blocks.
        assert 16 * n * n <= result[f"loss_{n}_peak_mib"] * 2 ** 20 <= 64 * n * n, result
        assert result[f"loss_{n}_min_ms"] <= result[f"loss_{n}_ms"] <= result[f"loss_{n}_max_ms"]
    assert result["step_256_ms"] == pytest.approx(500.0)
    assert result["loss_share_256"] == pytest.approx(result["loss_256_ms"] / 500.0)
    assert result["step_256_peak_mib"] >= 8.0 and "step_512_ms" not in result
    rows = loss_scaling.format_rows(result)
    assert [r.split()[0] for r in rows[2:]] == ["256", "512"] and len(rows[2].split()) == 7


def test_chunks_part_reports_time_and_peak_against_k_and_the_activation_per_image(
        monkeypatch):
    from simclr_tf.bench import chunks  # noqa: PLC0415

    cfg = config_lib.Config(model_dir="unused", train_batch_size=64)
    options = suite.Options(timed_runs=2, chunk_counts=(2, 3, 8))  # 3 does not divide 64
    peaks = []

    def fake_step(step_cfg, strategy, one):  # its step holds 8 MiB + 32 MiB / K
        assert one.steps_per_run == 1
        peaks.append(8 + 32 / step_cfg.embedding_chunks)
        return {"train_step_seconds": 0.5 if step_cfg.embedding_chunks == 1 else 0.65}

    # The allocator's peak around each measurement (the real one: chunked_step_test).
    monkeypatch.setattr(chunks.loss_scaling, "peak_mib", lambda fn: fn() or peaks[-1])
    result = chunks.run(cfg, tf.distribute.get_strategy(), options, lambda _: None, fake_step)
    assert peaks == [40, 24, 12]  # K = 1 (always: the reference), 2 and 8
    assert result["chunks_8_peak_mib"] == 12 and result["chunks_1_ms"] == 500.0
    assert result["chunks_8_time_ratio"] == pytest.approx(1.3)
    assert result["chunks_2_memory_ratio"] == pytest.approx(24 / 40)
    # 28 MiB freed going from 64 images at once to 8: 28 / (64 x 7/8) = 0.5 MiB per image
    assert result["activation_mib_per_image"] == pytest.approx(0.5)
    rows = chunks.format_rows(result)
    assert [r.split()[0] for r in rows[2:5]] == ["1", "2", "8"] and "0.50 MiB" in rows[5]


def test_input_files_rates_are_views_over_seconds_and_stages_ms_per_file(monkeypatch):
    from simclr_tf.bench import input_files  # noqa: PLC0415

    advance = _fake_clock(monkeypatch, input_files)

    def batches():  # the pipeline makes a batch of 4 images (8 views) in 0.375 s
        while True:
            advance(0.375)
            yield np.zeros([4, 2, 2, 6]), np.zeros([4])

    # 3 batches of warm-up, then batches until 1 s has passed: 3, 24 views in 1.125 s.
    assert input_files.views_per_second(batches(), 1.0) == pytest.approx(24 / 1.125)

    def stage(x):  # 2 ms a file
        advance(0.002)
    # The first call (tracing) untimed; then the median of 3 runs over the 5 files.
    assert input_files._per_call_ms(stage, list(range(5))) == pytest.approx(2.0)


def test_input_files_compares_the_two_ways_on_the_same_views(tmp_path, monkeypatch):
    from simclr_tf.bench import input_files  # noqa: PLC0415

    paths = input_files.write_jpegs(str(tmp_path), 6, 40, 52)
    shards = input_files.write_records(str(tmp_path), paths)
    cfg = config_lib.Config(model_dir="unused", image_size=16, train_batch_size=4,
                            color_jitter_strength=0.5, seed=1)
    for kind in ("files", "records"):
        source = input_files.EncodedImages(kind, paths, shards)
        decoded = [(x.numpy(), int(y)) for x, y in source.read("train")]
        from_bytes = [(tf.io.decode_jpeg(c).numpy(), int(y))
                      for c, y in source.read_encoded("train")]
        assert [y for _, y in decoded] == [y for _, y in from_bytes] and len(decoded) == 6
        assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(decoded, from_bytes))
        # Both ways give the same views (XLA's colours within float rounding of TF's).
        ours, original = (next(iter(input_files.pipeline(source, way, cfg)))[0]
                          for way in ("ours", "original"))
        np.testing.assert_allclose(ours.numpy(), original.numpy(), atol=2e-5)
    # The run's figures from given speeds (their measure: the test above), each pipeline
    # still making a batch of 4 images: views/s by (kind, way) in repeats 1 and 2.
    speeds = {("files", "original"): (10.0, 14.0), ("files", "ours"): (30.0, 28.0),
              ("records", "original"): (20.0, 25.0), ("records", "ours"): (50.0, 100.0)}
    reported = []

    def given_speed(ds, seconds):
        assert seconds == 0.2 and next(iter(ds))[0].shape[0] == 4
        kind, way, repeat = re.match(r"input from (\w+), (\w+)'s way, 16 px \((\d)/2\)",
                                     reported[-1]).groups()
        return speeds[kind, way][int(repeat) - 1]

    def files_timed(fn, xs):  # each stage runs on its inputs; the figure: how many
        fn(xs[0])
        return float(len(xs))

    monkeypatch.setattr(input_files, "views_per_second", given_speed)
    monkeypatch.setattr(input_files, "_per_call_ms", files_timed)
    options = suite.Options(file_images=4, file_height=40, file_width=52, file_seconds=0.2,
                            file_repeats=2)
    result = input_files.run(cfg, options, reported.append)
    figures = {k: v for k, v in result.items() if not k.startswith(("input_files_stage_",
                                                                   "input_files_mean_kib"))}
    # Median, min and max of the two repeats; the speed-ups of the repeats: 3 and 2 (files),
    # 2.5 and 4 (records).
    assert figures == pytest.approx({
        "input_files_files_original_views_per_sec": 12.0, "input_files_files_original_min": 10.0,
        "input_files_files_original_max": 14.0, "input_files_files_ours_views_per_sec": 29.0,
        "input_files_files_ours_min": 28.0, "input_files_files_ours_max": 30.0,
        "input_files_records_original_views_per_sec": 22.5,
        "input_files_records_original_min": 20.0, "input_files_records_original_max": 25.0,
        "input_files_records_ours_views_per_sec": 75.0, "input_files_records_ours_min": 50.0,
        "input_files_records_ours_max": 100.0, "input_files_files_speedup": 2.5,
        "input_files_files_speedup_min": 2.0, "input_files_files_speedup_max": 3.0,
        "input_files_records_speedup": 3.25, "input_files_records_speedup_min": 2.5,
        "input_files_records_speedup_max": 4.0})
    # The six stages of one view, each timed on the 4 files.
    assert {k: v for k, v in result.items() if k.startswith("input_files_stage_")} == {
        f"input_files_stage_{name}_ms": 4.0 for name in (
            "read", "decode_whole", "decode_window", "float_crop_resize", "colour_tf_kernels",
            "colour_xla_per_view")}
    assert result["input_files_mean_kib"] == pytest.approx(
        np.mean([os.path.getsize(p) for p in paths[:4]]) / 1024)
    assert "records  speed-up              3.25 (2.50-4.00)" in suite.format_table(cfg, result)


def test_repeated_runs_give_every_figure_as_median_min_and_max():
    from simclr_tf.bench import repeat as bench_repeat  # noqa: PLC0415

    runs = [{"train_views_per_sec": 10.0, "train_views_per_sec_min": 9.0,
             "train_views_per_sec_max": 11.0, "utilisation": 0.5, "name": "x"},
            {"train_views_per_sec": 14.0, "train_views_per_sec_min": 13.5,
             "train_views_per_sec_max": 16.0, "utilisation": 0.7, "name": "x"},
            {"train_views_per_sec": 12.0, "train_views_per_sec_min": 7.0,
             "train_views_per_sec_max": 12.5, "utilisation": 0.6, "name": "x"}]
    calls = iter(runs)
    result = bench_repeat.repeat(lambda: next(calls), 3, lambda _: None)
    assert result["repeats"] == 3 and "name" not in result
    assert (result["train_views_per_sec"], result["train_views_per_sec_min"],
            result["train_views_per_sec_max"]) == (12.0, 7.0, 16.0)
    assert (result["utilisation"], result["utilisation_min"], result["utilisation_max"]) == (
        0.6, 0.5, 0.7)
    assert bench_repeat.repeat(lambda: runs[0], 1, lambda _: None) is runs[0]
    cfg = config_lib.Config(model_dir="unused")
    assert "12.00 views/s (7.00-16.00)" in suite.format_table(cfg, result)
