"""The SimCLR ResNet: parameter counts of the original, shapes, padding, zero-init, naming,
freezing, and synchronised batch norm across replicas."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import simclr_tf  # noqa: F401
from simclr_tf.core import endpoints as ep
from simclr_tf.core.config import Config
from simclr_tf.models import resnet
from simclr_tf.models import simclr_model as model_lib
from simclr_tf.models.kernels import convs


def _count(model):
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


def _built(size=16, **kwargs):
    args = dict(depth=18, width_multiplier=0.25, cifar_stem=size <= 32)
    args.update(kwargs)
    model = resnet.build_resnet(**args)
    model(tf.zeros([1, size, size, 3]), training=False)
    return model


@pytest.mark.parametrize("kwargs,size,expected", [
    (dict(depth=50), 64, 23_508_032),
    (dict(depth=18), 64, 11_180_736),
    (dict(depth=18, cifar_stem=True), 32, 11_173_056),
    (dict(depth=50, sk_ratio=0.0625), 64, 35_215_584),
])
def test_parameter_counts_equal_the_originals(kwargs, size, expected):
    model = resnet.build_resnet(**kwargs)
    model(tf.zeros([1, size, size, 3]), training=False)
    assert _count(model) == expected


def _expected_basic_count(width, blocks, cifar_stem):
    """Trainable parameters of a basic-block ResNet, from the layout (conv + BN gamma/beta)."""
    c = [int(round(f * width)) for f in (64, 128, 256, 512)]
    stem = (3 * 3 if cifar_stem else 7 * 7) * 3 * c[0] + 2 * c[0]
    total, cin = stem, c[0]
    for filters, n in zip(c, blocks):
        for i in range(n):
            total += 9 * cin * filters + 2 * filters + 9 * filters * filters + 2 * filters
            if i == 0:
                total += cin * filters + 2 * filters
            cin = filters
    return total


@pytest.mark.parametrize("depth,width,cifar", [(18, 0.25, True), (34, 0.5, False)])
def test_small_parameter_counts_follow_the_layout(depth, width, cifar):
    model = _built(size=32 if cifar else 64, depth=depth, width_multiplier=width,
                   cifar_stem=cifar)
    assert _count(model) == _expected_basic_count(width, resnet.DEPTHS[depth][1], cifar)


@pytest.mark.parametrize("depth,expected_dim", [(18, 128), (50, 512)])
def test_output_and_endpoint_shapes(depth, expected_dim):
    model = _built(size=64, depth=depth, cifar_stem=False)
    assert model.feature_dim == expected_dim
    images = tf.random.uniform([2, 64, 64, 3], seed=1)
    features = model(images, training=False)
    assert features.shape == (2, expected_dim)
    out = model(images, training=False, return_endpoints=True)
    assert set(out) == set(ep.ENCODER_ENDPOINTS)
    assert out[ep.INITIAL_CONV].shape == (2, 32, 32, 16)  # 7x7 stride 2
    assert out[ep.INITIAL_MAX_POOL].shape == (2, 16, 16, 16)
    widths = [16, 32, 64, 128] if depth == 18 else [64, 128, 256, 512]
    for i, (name, side) in enumerate(zip(ep.BLOCK_GROUPS, (16, 8, 4, 2))):
        assert out[name].shape == (2, side, side, widths[i])
    np.testing.assert_allclose(out[ep.FINAL_AVG_POOL].numpy(),
                               out[ep.BLOCK_GROUPS[3]].numpy().mean(axis=(1, 2)), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(out[ep.FINAL_AVG_POOL].numpy(), features.numpy(), rtol=1e-5)


def test_cifar_stem_keeps_the_resolution():
    model = _built(size=16)
    out = model(tf.zeros([1, 16, 16, 3]), return_endpoints=True)
    assert out[ep.INITIAL_CONV].shape == (1, 16, 16, 16)
    assert out[ep.INITIAL_MAX_POOL].shape == (1, 16, 16, 16)
    assert out[ep.BLOCK_GROUPS[3]].shape == (1, 2, 2, 128)


def test_fixed_padding_of_strided_convolutions():
    conv = convs.Conv(1, 3, 2)
    x = np.arange(7 * 7, dtype=np.float32).reshape(1, 7, 7, 1)
    conv(x)
    conv.conv.kernel.assign(tf.ones([3, 3, 1, 1]))
    out = conv(x).numpy()[0, :, :, 0]
    # Reference: pad 1 before and 1 after (k - 1 = 2 in total), 3x3 sums at stride 2.
    padded = np.pad(x[0, :, :, 0], ((1, 1), (1, 1)))
    expected = np.array([[padded[i:i + 3, j:j + 3].sum() for j in range(0, 7, 2)]
                         for i in range(0, 7, 2)])
    np.testing.assert_array_equal(out, expected)
    # An even size: 8 -> 4 with one padded row at the start and none needed at the end.
    conv8 = convs.Conv(1, 3, 2)
    x8 = np.arange(64, dtype=np.float32).reshape(1, 8, 8, 1)
    conv8(x8)
    conv8.conv.kernel.assign(tf.ones([3, 3, 1, 1]))
    padded8 = np.pad(x8[0, :, :, 0], ((1, 1), (1, 1)))
    expected8 = np.array([[padded8[i:i + 3, j:j + 3].sum() for j in range(0, 8, 2)]
                          for i in range(0, 8, 2)])
    np.testing.assert_array_equal(conv8(x8).numpy()[0, :, :, 0], expected8)


def test_last_batch_norm_of_every_block_starts_at_zero_gamma():
    model = _built(depth=50, size=16)
    for group in model.block_groups:
        for block in group.blocks:
            last = block.layers_[-1].bn
            assert not np.any(last.gamma.numpy())
            others = [layer.bn for layer in block.layers_ if hasattr(layer, "bn")][:-1]
            assert all(np.all(bn.gamma.numpy() == 1) for bn in others)
    # Hence each block starts as relu(shortcut): a block's output equals relu of its shortcut.
    block = model.block_groups[1].blocks[0]
    x = tf.random.uniform([2, 8, 8, 64], seed=3)
    np.testing.assert_allclose(block(x, training=False).numpy(),
                               tf.nn.relu(block.shortcut(x, training=False)).numpy(),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("sk_ratio", [0.0, 0.0625])
def test_names_match_the_optimizer_exclusions(sk_ratio):
    model = _built(depth=50, size=64, sk_ratio=sk_ratio, cifar_stem=False)
    bn_vars = {v.name for layer in model.submodules
               if isinstance(layer, keras.layers.BatchNormalization) for v in layer.variables}
    named_bn = {v.name for v in model.variables if "batch_normalization" in v.name}
    assert bn_vars and bn_vars == named_bn
    assert not [v.name for v in model.variables
                if "bias" in v.name or "head_supervised" in v.name]
    convs = [layer for layer in model.submodules if isinstance(layer, keras.layers.Conv2D)]
    assert convs and not any(c.use_bias for c in convs)


def test_selective_kernel_shapes():
    model = _built(depth=50, size=64, sk_ratio=0.0625, cifar_stem=False)
    out = model(tf.zeros([1, 64, 64, 3]), return_endpoints=True)
    assert out[ep.INITIAL_CONV].shape == (1, 32, 32, 16)  # deep stem: /2 then 3x3 convs
    sk = model.block_groups[0].blocks[0].layers_[2]
    assert isinstance(sk, resnet._SKConv)
    assert sk.squeeze.filters == resnet.SK_MIN_DIM  # max(16 * 0.0625, 32)


def _train_a_few_steps(model, steps=2):
    opt = keras.optimizers.legacy.SGD(0.1)
    for step in range(steps):
        images = tf.random.stateless_uniform([4, 16, 16, 3], seed=[step, 0])
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(model(images, training=True)))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))


def test_freezing_after_block_two_keeps_the_frozen_part_bit_identical():
    model = _built(fine_tune_after_block=2)
    frozen = model.stem.variables + model.block_groups[0].variables + \
        model.block_groups[1].variables
    free = model.block_groups[2].variables + model.block_groups[3].variables
    trainable = {id(v) for v in model.trainable_variables}
    assert not any(id(v) in trainable for v in frozen)
    assert all(id(v) in trainable for v in free if v.trainable)
    before_frozen = [v.numpy().copy() for v in frozen]
    before_free = [v.numpy().copy() for v in free]
    # Frozen endpoints are the same in training and inference mode (moving statistics).
    x = tf.random.uniform([4, 16, 16, 3], seed=9)
    a = model(x, training=True, return_endpoints=True)
    b = model(x, training=False, return_endpoints=True)
    np.testing.assert_array_equal(a[ep.BLOCK_GROUPS[1]].numpy(), b[ep.BLOCK_GROUPS[1]].numpy())
    assert not np.allclose(a[ep.BLOCK_GROUPS[3]].numpy(), b[ep.BLOCK_GROUPS[3]].numpy())
    _train_a_few_steps(model)
    for v, before in zip(frozen, before_frozen):  # weights and moving statistics alike
        np.testing.assert_array_equal(v.numpy(), before, err_msg=v.name)
    changed = [v.name for v, before in zip(free, before_free)
               if not np.array_equal(v.numpy(), before)]
    assert any("moving_mean" in n for n in changed) and any("kernel" in n for n in changed)


def test_no_gradient_reaches_frozen_layers():
    model = _built(fine_tune_after_block=1)
    x = tf.random.uniform([2, 16, 16, 3], seed=2)
    variables = model.stem.variables + model.block_groups[0].variables
    with tf.GradientTape() as tape:
        tape.watch(variables)
        loss = tf.reduce_sum(model(x, training=True))
    assert all(g is None for g in tape.gradient(loss, variables))


def test_fully_frozen_encoder_has_no_trainable_variables():
    assert _built(fine_tune_after_block=4).trainable_variables == []
    assert len(_built(fine_tune_after_block=-1).trainable_variables) > 0


def test_global_batch_norm_on_two_replicas_equals_one_device(two_replicas):
    images = tf.random.stateless_uniform([8, 16, 16, 3], seed=[4, 2])
    with two_replicas.scope():
        synced = _built(global_bn=True)
    single = _built(global_bn=False)
    single.set_weights(synced.get_weights())
    expected = single(images, training=True).numpy()

    def value_fn(ctx):
        i = ctx.replica_id_in_sync_group
        return images[i * 4:(i + 1) * 4]

    dist = two_replicas.experimental_distribute_values_from_function(value_fn)
    out = two_replicas.run(tf.function(lambda x: synced(x, training=True)), args=(dist,))
    got = np.concatenate([t.numpy() for t in two_replicas.experimental_local_results(out)])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # Without synchronisation each replica normalises its own half: the result differs.
    with two_replicas.scope():
        local = _built(global_bn=False)
    local.set_weights(synced.get_weights())
    out = two_replicas.run(tf.function(lambda x: local(x, training=True)), args=(dist,))
    got_local = np.concatenate([t.numpy() for t in
                                two_replicas.experimental_local_results(out)])
    assert not np.allclose(got_local, expected, rtol=1e-4, atol=1e-5)


SEED = 3


def _batch_norms(model):
    return [layer for layer in model._flatten_layers()
            if isinstance(layer, keras.layers.BatchNormalization)]


def test_from_config_synchronises_batch_norm_only_across_several_replicas(
        one_replica, two_replicas):
    cfg = Config(model_dir="/unused", resnet_depth=18, width_multiplier=0.25, image_size=16,
                 global_bn=True, lineareval_while_pretraining=False, calibrate_kernels=False)
    with two_replicas.scope():  # the builder's choice, made once from the config
        assert all(bn.synchronized for bn in _batch_norms(
            model_lib.from_config(cfg, None, two_replicas)))
    with one_replica.scope():
        assert not any(bn.synchronized for bn in _batch_norms(
            model_lib.from_config(cfg, None, one_replica)))


def _relative(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_one_replica_batch_norm_computes_the_synchronised_layers_statistics(
        one_replica, kernels):
    # What one replica runs instead of the synchronised layer (fused_batch_norm: TF's fused
    # kernel, or on a CPU the sums + depthwise convolution), against the synchronised layer
    # asked for on one replica; the convolutions the same way on both sides.
    with one_replica.scope():
        # Seeded weights: the draw depended on the tests run before in the same worker, and
        # one draw (a channel of near-zero batch variance, we think) made the two kernels'
        # gradients differ by 6% in one variable: conditioning, not a wrong backward pass.
        keras.utils.set_random_seed(SEED)
        fused = _built(global_bn=False, matmul_small_convs=True, kernel_chooser=kernels.chooser)
        synced = _built(global_bn=True, matmul_small_convs=True, kernel_chooser=kernels.chooser)
    assert not any(bn.synchronized for bn in _batch_norms(fused))
    assert all(bn.synchronized for bn in _batch_norms(synced))
    synced.set_weights(fused.get_weights())
    images = tf.random.stateless_uniform([8, 16, 16, 3], seed=[7, 1])

    def run(model):
        @tf.function  # the kernel choice applies to traced steps
        def step():
            with tf.GradientTape() as tape:
                out = model(images, training=True)
                loss = tf.reduce_sum(tf.sin(out))
            return out, tape.gradient(loss, model.trainable_variables)

        out, grads = step()
        ops = _graph_op_types(step.get_concrete_function())
        return out.numpy(), [g.numpy() for g in grads], ops

    (out_f, grads_f, ops_f), (out_s, grads_s, _) = run(fused), run(synced)
    # The pinned kernel ran: TF's fused batch norm, or the sums + depthwise convolution.
    assert ("FusedBatchNormV3" in ops_f) == (kernels.name == "tf")
    assert ("DepthwiseConv2dNative" in ops_f) == (kernels.name == "other")
    # Rounding noise only: measured 1e-6 of the features' norm and up to 3e-5 of a variable's
    # gradient norm for either kernel (up to 1e-4 over 40 other weight draws); a wrong
    # backward pass or Keras's default epsilon (1e-3, not the original's 1e-5) differs by more.
    assert _relative(out_f, out_s) <= 1e-5
    for a, b, v in zip(grads_f, grads_s, fused.trainable_variables):
        assert np.linalg.norm(a - b) <= 1e-4 * np.linalg.norm(b) + 1e-7, v.name
    # Moving statistics: the same mean; the fused kernel averages the unbiased batch
    # variance (x n / (n - 1), n = values per channel), the synchronised layer the biased one.
    for bn_f, bn_s in zip(_batch_norms(fused), _batch_norms(synced)):
        np.testing.assert_allclose(bn_f.moving_mean.numpy(), bn_s.moving_mean.numpy(),
                                   rtol=1e-4, atol=1e-6)
        momentum = bn_s.momentum
        batch_var = (bn_s.moving_variance.numpy() - momentum) / (1 - momentum)  # from 1.0
        n = None
        for candidate in (8 * 16 * 16, 8 * 8 * 8, 8 * 4 * 4, 8 * 2 * 2):
            expected = momentum + (1 - momentum) * batch_var * candidate / (candidate - 1)
            if np.allclose(bn_f.moving_variance.numpy(), expected, rtol=1e-4, atol=1e-7):
                n = candidate
        assert n is not None, bn_f.name  # matches the analytic value at its resolution


@pytest.mark.parametrize("kwargs,match", [
    (dict(depth=19), "resnet_depth=19"),
    (dict(depth=18, width_multiplier=0), "width_multiplier=0"),
    (dict(depth=18, sk_ratio=-0.1), "sk_ratio=-0.1"),
    (dict(depth=18, fine_tune_after_block=5), "fine_tune_after_block=5"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resnet.build_resnet(**kwargs)


def _conv_reference(x, kernel, stride, dy):
    """Forward, input gradient and kernel gradient of a 3x3 convolution (stride 1: SAME; more:
    VALID), written from the definition y[n,i,j,f] = sum_abc xpad[n,si+a,sj+b,c] k[a,b,c,f]."""
    pad = 1 if stride == 1 else 0
    xp = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)]).astype(np.float64)
    rows, cols = (xp.shape[1] - 3) // stride + 1, (xp.shape[2] - 3) // stride + 1
    y = np.zeros([x.shape[0], rows, cols, kernel.shape[3]])
    dxp, dk = np.zeros_like(xp), np.zeros(kernel.shape)
    for a in range(3):
        for b in range(3):
            window = xp[:, a:a + stride * (rows - 1) + 1:stride,
                        b:b + stride * (cols - 1) + 1:stride]
            y += window @ kernel[a, b]
            dk[a, b] = np.einsum("nijc,nijf->cf", window, dy)
            dxp[:, a:a + stride * (rows - 1) + 1:stride,
                b:b + stride * (cols - 1) + 1:stride] += dy @ kernel[a, b].T
    dx = dxp[:, pad:dxp.shape[1] - pad, pad:dxp.shape[2] - pad]
    return y, dx, dk


@pytest.mark.parametrize("shape,stride", [
    ((2, 4, 4, 5), 1), ((3, 3, 5, 4), 1), ((1, 2, 2, 3), 1),
    ((2, 10, 10, 3), 2), ((2, 9, 7, 4), 2)])
def test_convolution_as_matmul_equals_the_definition(shape, stride):
    rng = np.random.default_rng(sum(shape) + stride)
    x = rng.normal(size=shape).astype(np.float32)
    kernel = rng.normal(size=[3, 3, shape[-1], 6]).astype(np.float32)
    xt, kt = tf.constant(x), tf.constant(kernel)
    with tf.GradientTape() as tape:
        tape.watch([xt, kt])
        y = convs.conv3x3_as_matmul(xt, kt, stride)
        dy = tf.constant(rng.normal(size=y.shape).astype(np.float32))
        loss = tf.reduce_sum(y * dy)
    dx, dk = tape.gradient(loss, [xt, kt])
    want_y, want_dx, want_dk = _conv_reference(x, kernel, stride, dy.numpy())
    for got, want in ((y, want_y), (dx, want_dx), (dk, want_dk)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)


def _graph_op_types(concrete_function):
    return {op.type for op in concrete_function.graph.get_operations()}


def _op_types(layer, shape, dtype=tf.float32):
    fn = tf.function(lambda x: layer(x))
    return _graph_op_types(fn.get_concrete_function(tf.TensorSpec(shape, dtype)))


@pytest.mark.parametrize("size,strides,as_matmul", [
    (4, 1, True), (5, 1, False), (8, 2, True), (14, 2, True), (16, 2, False)])
def test_only_small_3x3_convolutions_run_as_matmul(size, strides, as_matmul):
    conv = convs.Conv(8, 3, strides, matmul=True)
    ops = _op_types(conv, [2, size, size, 4])
    assert ("Conv2D" not in ops and {"GatherV2", "MatMul"} <= ops) == as_matmul
    assert "Conv2D" in ops or as_matmul


def test_matmul_convolutions_stay_off_when_asked_for_exports_and_in_bfloat16():
    assert "Conv2D" in _op_types(convs.Conv(8, 3, matmul=False), [2, 4, 4, 4])
    assert "Conv2D" in _op_types(convs.Conv(8, 1, matmul=True), [2, 4, 4, 4])
    net = keras.Sequential([convs.Conv(8, 3, matmul=True)])
    with convs.tf_kernels(net):
        assert "Conv2D" in _op_types(net, [2, 4, 4, 4])
    assert "Conv2D" not in _op_types(net, [2, 4, 4, 4])
    assert "Conv2D" in _op_types(convs.Conv(8, 3, matmul=True, dtype="bfloat16"),
                                 [2, 4, 4, 4], tf.bfloat16)


def test_matmul_convolutions_leave_the_network_unchanged():
    # Same variables (names, checkpoints), same features and gradients up to float rounding.
    def build(matmul):
        keras.backend.clear_session()  # the same automatic layer names for both
        model = resnet.build_resnet(18, width_multiplier=0.25, cifar_stem=True,
                                    matmul_small_convs=matmul)
        model(tf.zeros([1, 32, 32, 3]), training=False)
        return model

    fast, stock = build(True), build(False)
    assert [v.name for v in fast.variables] == [v.name for v in stock.variables]
    rng = np.random.default_rng(3)
    for a, b in zip(fast.variables, stock.variables):
        a.assign(b + rng.normal(scale=0.1, size=b.shape).astype(np.float32))
        b.assign(a)
    images = tf.constant(rng.uniform(size=[4, 32, 32, 3]).astype(np.float32))
    results = []
    for model in (fast, stock):
        step = tf.function(lambda m=model: _features_and_gradients(m, images))
        results.append(step())
        assert ("GatherV2" in _graph_op_types(step.get_concrete_function())) == (model is fast)
    for got, want in zip(*results):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=2e-4, atol=2e-5)


def _features_and_gradients(model, images):
    with tf.GradientTape() as tape:
        features = model(images, training=True)
        loss = tf.reduce_sum(tf.sin(features))
    return [features] + tape.gradient(loss, model.trainable_variables)


def _se_count_by_hand(depth, width, se_ratio):
    """Squeeze-and-excitation parameters, counted from the original's definition: per block
    of base width f and output width C (f, or 4f in a bottleneck), a 1x1 convolution with
    bias C -> r = max(1, int(f * se_ratio)) and one with bias r -> C."""
    kind, blocks = resnet.DEPTHS[depth]
    total = 0
    for base, n in zip((64, 128, 256, 512), blocks):
        f = int(round(base * width))
        c = 4 * f if kind == "bottleneck" else f
        r = max(1, int(f * se_ratio))
        total += n * (c * r + r + r * c + c)
    return total


@pytest.mark.parametrize("depth,width,se_ratio,by_hand", [
    (18, 0.25, 0.25, 22_360), (50, 0.25, 0.0625, None)])
def test_squeeze_excitation_adds_the_originals_parameters(depth, width, se_ratio, by_hand):
    plain, se = (_count(_built(size=32, depth=depth, width_multiplier=width, se_ratio=r))
                 for r in (0.0, se_ratio))
    assert se - plain == _se_count_by_hand(depth, width, se_ratio)
    if by_hand is not None:  # 2 blocks per group: 2 x (2 C r + r + C), C = 16, 32, 64, 128
        assert se - plain == by_hand


def test_squeeze_excitation_computes_the_gated_input():
    rng = np.random.default_rng(5)
    x = rng.normal(size=[2, 4, 3, 8]).astype(np.float32)
    layer = resnet._SqueezeExcite(filters=8, se_ratio=0.25)
    layer(tf.constant(x))
    w1, b1, w2, b2 = (rng.normal(size=v.shape).astype(np.float32) for v in layer.weights)
    for v, value in zip(layer.weights, (w1, b1, w2, b2)):
        v.assign(value)
    hidden = np.maximum(x.mean(axis=(1, 2)) @ w1.reshape(8, 2) + b1, 0)
    gate = 1 / (1 + np.exp(-(hidden @ w2.reshape(2, 8) + b2)))
    np.testing.assert_allclose(layer(tf.constant(x)).numpy(), x * gate[:, None, None, :],
                               rtol=1e-5, atol=1e-6)
    assert [v.name.split("/")[-2:] for v in layer.weights] == [
        ["se_reduce", "kernel:0"], ["se_reduce", "bias:0"], ["se_expand", "kernel:0"],
        ["se_expand", "bias:0"]]
