"""The small convolutions' measured choice: decisions, cache, and the graph they give."""

import json

import numpy as np
import pytest
import tensorflow as tf

from simclr_tf.models import resnet
from simclr_tf.models.kernels import convs, cpu_batch_norm, kernel_choice

# The candidates of a width-0.25 ResNet-18 at 16 px (CIFAR stem) for a batch of 4: the
# strided convolutions see their padded input; the 16 x 16 group has too many positions.
CANDIDATES = {"b4 18x18x16->32 s2", "b4 8x8x32->32 s1", "b4 10x10x32->64 s2",
              "b4 4x4x64->64 s1", "b4 6x6x64->128 s2", "b4 2x2x128->128 s1"}


class FakeMeasure:
    """(other way's, TF's) seconds: a convolution's matmul 1.2x faster when strided, 1.01x
    not; a batch norm's other way ``bn_gain`` x faster."""

    def __init__(self, bn_gain=1.0):
        self.asked, self.bn_gain = [], bn_gain

    def __call__(self, shape):
        self.asked.append(shape.key)
        if isinstance(shape, cpu_batch_norm.BatchNormShape):
            return 1.0, self.bn_gain
        return (1.0, 1.2) if shape.stride > 1 else (1.0, 1.01)


def test_the_faster_way_is_chosen_and_each_shape_measured_once_per_machine(tmp_path):
    cache = str(tmp_path / "sub" / "choices.json")
    measure = FakeMeasure()
    chooser = kernel_choice.KernelChooser(cache, measure, machine="cpu A", report=lambda _: None)
    strided, plain = convs.ConvShape(4, 10, 10, 8, 16, 2), convs.ConvShape(4, 4, 4, 8, 8, 1)
    assert chooser(strided) is True  # 1.2x >= MIN_GAIN
    assert chooser(plain) is False  # 1.01x: below MIN_GAIN, TF's kernel
    assert chooser(strided) is True and len(measure.asked) == 2
    again = FakeMeasure()
    reread = kernel_choice.KernelChooser(cache, again, machine="cpu A", report=lambda _: None)
    assert (reread(strided), reread(plain)) == (True, False) and again.asked == []
    early = kernel_choice.KernelChooser(cache, again, machine="cpu A", report=lambda _: None)
    late = convs.ConvShape(4, 6, 6, 8, 8, 2)
    assert chooser(late) is True and early(late) is True  # read, not measured again
    assert again.asked == [] and len(measure.asked) == 3
    other = kernel_choice.KernelChooser(cache, again, machine="cpu B", report=lambda _: None)
    other(plain)
    assert again.asked == [plain.key]
    saved = json.load(open(cache))["machines"]
    assert set(saved) == {"cpu A", "cpu B"}
    assert saved["cpu A"][strided.key] == {"other_ms": 1000.0, "tf_ms": 1200.0,
                                           "gain": 1.2, "other": True}


def test_a_corrupt_or_unwritable_cache_is_named_and_measured_again(tmp_path, caplog):
    cache = tmp_path / "choices.json"
    cache.write_text("{not json")
    shape = convs.ConvShape(2, 4, 4, 8, 8, 2)
    measure = FakeMeasure()
    chooser = kernel_choice.KernelChooser(str(cache), measure, machine="m", report=lambda _: None)
    assert "ignoring the kernel choices in " + str(cache) in caplog.text
    assert chooser(shape) is True and measure.asked == [shape.key]
    assert json.load(open(cache))["machines"]["m"][shape.key]["other"] is True
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    unwritable = kernel_choice.KernelChooser(str(blocked / "choices.json"), FakeMeasure(),
                                             machine="m", report=lambda _: None)
    assert unwritable(shape) is True  # kept in memory
    assert "cannot keep the kernel choices in" in caplog.text


def test_a_traced_network_runs_as_matmuls_exactly_the_chosen_candidates():
    measure = FakeMeasure()
    chooser = kernel_choice.KernelChooser(None, measure, machine="m", report=lambda _: None)
    net = resnet.build_resnet(18, width_multiplier=0.25, cifar_stem=True,
                              matmul_small_convs=True, kernel_chooser=chooser)
    net(tf.zeros([4, 16, 16, 3]), training=False)  # eager: TF's kernels, nothing measured
    assert measure.asked == []
    trace = tf.function(lambda x: net(x, training=True)).get_concrete_function(
        tf.TensorSpec([4, 16, 16, 3]))
    convolutions = [key for key in measure.asked if not key.startswith("bn ")]
    assert set(convolutions) == CANDIDATES and len(convolutions) == len(CANDIDATES)
    ops = [op.type for op in trace.graph.get_operations()]
    # the three strided candidates as matmuls (one gather each), every other one TF's
    assert ops.count("GatherV2") == 3
    # 17 3x3 convolutions (the stem's, two in each of 8 blocks) and 4 1x1 projections (the
    # original projects in every group's first block), less the 3 matmuls
    assert ops.count("Conv2D") == 17 + 4 - 3


@pytest.mark.parametrize("stride", [1, 2])
def test_the_timed_steps_compute_the_same_convolution_and_gradients(stride):
    shape = convs.ConvShape(2, 6, 6, 4, 5, stride)
    x = tf.random.normal([2, 6, 6, 4], seed=3)
    kernel = tf.random.normal([3, 3, 4, 5], seed=4)
    out = 6 if stride == 1 else 2
    dy = tf.random.normal([2, out, out, 5], seed=5)
    as_matmul, tf_kernel, _ = kernel_choice._conv_pair(shape)
    matmul, stock = as_matmul(x, kernel, dy), tf_kernel(x, kernel, dy)
    with tf.GradientTape() as tape:  # TF's own gradients of the convolution, as reference
        tape.watch([x, kernel])
        y = tf.nn.conv2d(x, kernel, stride, "SAME" if stride == 1 else "VALID")
    reference = [y] + tape.gradient(y, [x, kernel], output_gradients=dy)
    for a, b, want in zip(matmul, stock, reference):
        np.testing.assert_allclose(a.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(b.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)


class FakeClock:
    """``time``'s stand-in in kernel_choice: ``perf_counter`` reads a clock that only the
    fake timed steps move, each by its own cost, so which way is faster is set here."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def _fake_pair(clock, costs, calls):
    """``_conv_pair``'s and ``timed_pair``'s stand-in: (the other way's, TF's) steps, each
    moving ``clock`` by its cost in ``costs`` ({"other": s, "tf": s}) and counted in
    ``calls``, and their arguments."""

    def step(way):
        def run():
            calls[way] += 1
            clock.now += costs[way]
            return (tf.zeros([]),)
        return run

    return lambda shape: (step("other"), step("tf"), ())


@pytest.mark.parametrize("faster", ["other", "tf"])
def test_time_both_picks_the_way_that_ran_faster_keeps_it_and_reads_it_back(
        tmp_path, monkeypatch, faster):
    # The real time_both inside a real trace, on a clock where one way's step takes a third
    # of the other's: that way is chosen, the layer traces as it says, and the choice is kept
    # and read back by another chooser without measuring again.
    clock, calls = FakeClock(), {"other": 0, "tf": 0}
    costs = {"other": 0.001, "tf": 0.003} if faster == "other" else {"other": 0.003,
                                                                        "tf": 0.001}
    monkeypatch.setattr(kernel_choice, "time", clock)
    monkeypatch.setattr(kernel_choice, "_conv_pair", _fake_pair(clock, costs, calls))
    cache = str(tmp_path / "choices.json")
    lines = []
    chooser = kernel_choice.KernelChooser(cache, machine="m", report=lines.append)
    layer = convs.Conv(8, 3, strides=1, matmul=True, chooser=chooser)
    trace = tf.function(lambda x: layer(x)).get_concrete_function(tf.TensorSpec([2, 4, 4, 8]))
    ops = sorted({op.type for op in trace.graph.get_operations()})
    traced = "other" if "GatherV2" in ops and "Conv2D" not in ops else "tf"
    assert traced == faster, f"{faster} ran faster, the layer traced {traced}'s ops: {ops}"
    assert calls["other"] == calls["tf"] >= 3  # alternated, warm-up and at least 3 timed
    assert len(lines) == 2 and "b2 4x4x8->8 s1" in lines[1]
    assert lines[1].endswith("-> matmul" if faster == "other" else "-> TF's kernel")
    want = {"other_ms": costs["other"] * 1e3, "tf_ms": costs["tf"] * 1e3,
            "gain": round(costs["tf"] / costs["other"], 3), "other": faster == "other"}
    with open(cache, encoding="utf-8") as f:
        assert json.load(f)["machines"]["m"] == {"b2 4x4x8->8 s1": want}

    def never(shape):
        raise AssertionError(f"measured {shape.key} again")

    reread = kernel_choice.KernelChooser(cache, never, machine="m", report=lines.append)
    assert reread(convs.ConvShape(2, 4, 4, 8, 8, 1)) is (faster == "other")
    assert len(lines) == 2  # nothing measured, nothing reported


def test_a_real_measurement_inside_a_trace_is_kept_and_traced():
    # Real timings (which way wins depends on the machine and its load, so no assertion
    # says which): the two steps run eagerly inside the trace, and the layer traces the way
    # the kept decision says.
    lines = []
    chooser = kernel_choice.KernelChooser(None, machine="m", report=lines.append)
    layer = convs.Conv(8, 3, strides=1, matmul=True, chooser=chooser)
    trace = tf.function(lambda x: layer(x)).get_concrete_function(tf.TensorSpec([2, 4, 4, 8]))
    (key, decision), = chooser.decisions.items()
    assert key == "b2 4x4x8->8 s1" and len(lines) == 2 and key in lines[1]
    assert decision["other_ms"] > 0 and decision["tf_ms"] > 0
    ops = {op.type for op in trace.graph.get_operations()}
    assert ("Conv2D" not in ops) == decision["other"]
