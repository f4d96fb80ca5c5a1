"""The SimCLR ResNet encoder f: ResNet v1.5 with optional selective kernels (SimCLRv2).

Layout as in the original TF2 code (docs/method.md): stride on the 3x3 convolution, convolutions
without bias, batch norm (decay 0.9, epsilon 1e-5) + ReLU, a projection shortcut in the first
block of EVERY block group, the last batch norm of each residual block with gamma initialised
to zero. ``cifar_stem`` (images of 32 px and below) replaces the 7x7/2 convolution and the
max-pool by one 3x3/1 convolution. ``sk_ratio`` > 0 gives SimCLRv2's selective-kernel
bottlenecks, the ResNet-D deep stem and average-pooled projection shortcuts.

Naming contract with the optimizer (``optim.EXCLUDE_FROM_WEIGHT_DECAY``): every batch-norm
layer is named ``batch_normalization``, and no other variable's name contains
``batch_normalization``, ``bias`` or ``head_supervised``.
"""

from typing import Dict, List, Optional

import tensorflow as tf
import tf_keras as keras

from simclr_tf.core import choices
from simclr_tf.core import endpoints as ep
from simclr_tf.models.kernels import convs, cpu_batch_norm

# depth -> (block kind, blocks per group), for every depth in choices.RESNET_DEPTHS
DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}
GROUP_FILTERS = (64, 128, 256, 512)
GROUP_STRIDES = (1, 2, 2, 2)
SK_MIN_DIM = 32
def _channels(base: int, width_multiplier: float) -> int:
    return max(1, int(round(base * width_multiplier)))


class _Settings:
    """Settings shared by every layer of one network; makes its batch norms and convolutions."""

    def __init__(self, global_bn: bool, decay: float, epsilon: float,
                 matmul_small_convs: bool = False, kernel_chooser=None):
        self.global_bn, self.decay, self.epsilon = global_bn, decay, epsilon
        self.matmul_small_convs, self.kernel_chooser = matmul_small_convs, kernel_chooser

    def bn(self, relu: bool = True, zero_gamma: bool = False) -> "_BatchNormRelu":
        # On a CPU in float32, the kernel chooser may run a training batch norm another way
        # (cpu_batch_norm); the synchronised layer always runs its own.
        return _BatchNormRelu(self, relu=relu, zero_gamma=zero_gamma)

    def conv(self, filters: int, kernel_size: int, strides: int = 1, **kwargs) -> convs.Conv:
        return convs.Conv(filters, kernel_size, strides, matmul=self.matmul_small_convs,
                          chooser=self.kernel_chooser, **kwargs)


class _BatchNormRelu(keras.layers.Layer):
    """Batch norm, then ReLU unless ``relu`` is False."""

    def __init__(self, bn: _Settings, relu: bool = True, zero_gamma: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.relu = relu
        self.chooser = None if bn.global_bn else bn.kernel_chooser
        self.bn = keras.layers.BatchNormalization(
            momentum=bn.decay, epsilon=bn.epsilon, synchronized=bn.global_bn,
            gamma_initializer="zeros" if zero_gamma else "ones", name="batch_normalization")

    def call(self, x, training=None):
        if training is True and self._other_way(x):
            return self._cpu_train(x)
        x = self.bn(x, training=training)
        return tf.nn.relu(x) if self.relu else x

    def _other_way(self, x) -> bool:
        """Whether the chooser runs this training batch norm as ``cpu_batch_norm`` does."""
        if (self.chooser is None or x.dtype != tf.float32 or not x.shape.is_fully_defined()
                or tf.executing_eagerly() or not self.bn.built or not self.bn.trainable):
            return False
        return self.chooser(cpu_batch_norm.BatchNormShape(*x.shape.as_list(), self.relu))

    def _cpu_train(self, x):
        """The fused layer's training step, its forward pass on ``cpu_batch_norm``: the same
        output, gradients and moving averages (of the unbiased batch variance)."""
        bn = self.bn
        y, mean, variance = cpu_batch_norm.batch_norm_train(
            x, tf.convert_to_tensor(bn.gamma), tf.convert_to_tensor(bn.beta), bn.epsilon,
            self.relu)
        for moving, value in ((bn.moving_mean, mean), (bn.moving_variance, variance)):
            moving.assign(moving * bn.momentum + value * (1.0 - bn.momentum))
        return y


class _SKConv(keras.layers.Layer):
    """Selective-kernel 3x3 convolution (SimCLRv2): two 3x3 streams fused by attention."""

    def __init__(self, filters: int, strides: int, sk_ratio: float, net: _Settings, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.conv = net.conv(2 * filters, 3, strides, name="streams")
        self.bn = net.bn()
        self.squeeze = keras.layers.Conv2D(
            max(int(filters * sk_ratio), SK_MIN_DIM), 1, use_bias=False,
            kernel_initializer=keras.initializers.VarianceScaling(), name="squeeze")
        self.squeeze_bn = net.bn()
        self.excite = keras.layers.Conv2D(
            2 * filters, 1, use_bias=False,
            kernel_initializer=keras.initializers.VarianceScaling(), name="excite")

    def call(self, x, training=None):
        x = self.bn(self.conv(x), training=training)
        streams = tf.stack(tf.split(x, 2, axis=-1), axis=0)  # [2, B, H, W, C]
        pooled = tf.reduce_mean(tf.reduce_sum(streams, axis=0), axis=[1, 2], keepdims=True)
        attention = self.excite(self.squeeze_bn(self.squeeze(pooled), training=training))
        attention = tf.nn.softmax(tf.stack(tf.split(attention, 2, axis=-1), axis=0), axis=0)
        return tf.reduce_sum(streams * attention, axis=0)


class _SqueezeExcite(keras.layers.Layer):
    """Squeeze-and-excitation (``se_ratio`` > 0), as in the original: the spatial mean, a
    1x1 convolution WITH bias to max(1, int(filters * se_ratio)) channels, ReLU, a 1x1
    convolution with bias back to the input's channels, sigmoid, times the input. The
    squeeze width comes from the block's ``filters``, not from its (4x) output width."""

    def __init__(self, filters: int, se_ratio: float, **kwargs):
        super().__init__(**kwargs)
        self.reduce = keras.layers.Conv2D(
            max(1, int(filters * se_ratio)), 1, use_bias=True,
            kernel_initializer=keras.initializers.VarianceScaling(), name="se_reduce")
        self.expand = None

    def build(self, input_shape):
        self.expand = keras.layers.Conv2D(
            int(input_shape[-1]), 1, use_bias=True,
            kernel_initializer=keras.initializers.VarianceScaling(), name="se_expand")
        super().build(input_shape)

    def call(self, x):
        squeezed = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
        return tf.sigmoid(self.expand(tf.nn.relu(self.reduce(squeezed)))) * x


class _Shortcut(keras.layers.Layer):
    """Projection shortcut: 1x1 convolution (with the stride) + batch norm, no ReLU.

    With selective kernels it is ResNet-D's: 2x2 average pooling, then a 1x1/1 convolution.
    """

    def __init__(self, filters: int, strides: int, resnet_d: bool, net: _Settings, **kwargs):
        super().__init__(**kwargs)
        self.strides, self.resnet_d = strides, resnet_d
        self.conv = net.conv(filters, 1, 1 if resnet_d else strides, name="projection")
        self.bn = net.bn(relu=False)

    def call(self, x, training=None):
        if self.resnet_d:
            if self.strides > 1:
                x = tf.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]])
                x = tf.nn.avg_pool2d(x, 2, self.strides, "VALID")
            else:
                x = tf.nn.avg_pool2d(x, 2, 1, "SAME")
        return self.bn(self.conv(x), training=training)


class _Block(keras.layers.Layer):
    """A basic (two 3x3) or bottleneck (1x1, 3x3, 1x1 x4) residual block."""

    def __init__(self, kind: str, filters: int, strides: int, use_projection: bool,
                 sk_ratio: float, net: _Settings, se_ratio: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.kind = kind
        out = 4 * filters if kind == "bottleneck" else filters
        self.shortcut = (_Shortcut(out, strides, sk_ratio > 0, net, name="shortcut")
                         if use_projection else None)
        if kind == "bottleneck":
            self.layers_ = [net.conv(filters, 1, name="conv_a"), net.bn()]
            if sk_ratio > 0:
                self.layers_ += [_SKConv(filters, strides, sk_ratio, net, name="sk_conv_b")]
            else:
                self.layers_ += [net.conv(filters, 3, strides, name="conv_b"), net.bn()]
            self.layers_ += [net.conv(out, 1, name="conv_c"), net.bn(relu=False, zero_gamma=True)]
        else:
            self.layers_ = [net.conv(filters, 3, strides, name="conv_a"), net.bn(),
                            net.conv(filters, 3, name="conv_b"),
                            net.bn(relu=False, zero_gamma=True)]
        if se_ratio > 0:
            self.layers_.append(_SqueezeExcite(filters, se_ratio, name="se"))

    def call(self, x, training=None):
        shortcut = x if self.shortcut is None else self.shortcut(x, training=training)
        for layer in self.layers_:
            x = layer(x) if isinstance(layer, (convs.Conv, _SqueezeExcite)) else layer(
                x, training=training)
        return tf.nn.relu(x + shortcut)


class _Stem(keras.layers.Layer):
    """The stem; returns (raw output of the last stem convolution, stem output)."""

    def __init__(self, width_multiplier: float, cifar_stem: bool, sk: bool, net: _Settings,
                 **kwargs):
        super().__init__(**kwargs)
        channels = _channels(64, width_multiplier)
        self.max_pool = not cifar_stem
        self.pre = []
        if cifar_stem:
            self.conv = net.conv(channels, 3, 1, name="conv")
        elif sk:  # ResNet-D deep stem
            self.pre = [net.conv(max(1, channels // 2), 3, 2, name="conv_1"), net.bn(),
                        net.conv(max(1, channels // 2), 3, 1, name="conv_2"), net.bn()]
            self.conv = net.conv(channels, 3, 1, name="conv")
        else:
            self.conv = net.conv(channels, 7, 2, name="conv")
        self.bn = net.bn()

    def call(self, x, training=None):
        for layer in self.pre:
            x = layer(x) if isinstance(layer, convs.Conv) else layer(x, training=training)
        initial_conv = self.conv(x)
        x = self.bn(initial_conv, training=training)
        if self.max_pool:
            x = tf.nn.max_pool2d(x, 3, 2, "SAME")
        return initial_conv, x


class _BlockGroup(keras.layers.Layer):
    def __init__(self, kind: str, filters: int, num_blocks: int, strides: int,
                 sk_ratio: float, net: _Settings, se_ratio: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [
            _Block(kind, filters, strides if i == 0 else 1, use_projection=i == 0,
                   sk_ratio=sk_ratio, net=net, se_ratio=se_ratio, name=f"block_{i}")
            for i in range(num_blocks)]

    def call(self, x, training=None):
        for block in self.blocks:
            x = block(x, training=training)
        return x


class ResNet(keras.Model):
    """The encoder: images [B, H, W, 3] -> pooled features [B, feature_dim].

    ``call(images, training, return_endpoints=True)`` returns the dict of named endpoints
    (``endpoints.ENCODER_ENDPOINTS``: ``initial_conv``, ``initial_max_pool``,
    ``block_group1..4``, ``final_avg_pool``) instead of the features.

    With ``fine_tune_after_block`` = k >= 0 the stem and block groups 1..k are frozen: not
    trainable, batch norm in inference mode (moving statistics neither used from the batch
    nor updated), and no gradient flows back through them.
    """

    def __init__(self, depth: int, width_multiplier: float, sk_ratio: float, cifar_stem: bool,
                 net: _Settings, fine_tune_after_block: int, se_ratio: float = 0.0,
                 name: str = "resnet", **kwargs):
        super().__init__(name=name, **kwargs)
        kind, blocks = DEPTHS[depth]
        self.depth, self.width_multiplier, self.sk_ratio = depth, width_multiplier, sk_ratio
        self.fine_tune_after_block = fine_tune_after_block
        self.stem = _Stem(width_multiplier, cifar_stem, sk_ratio > 0, net, name="stem")
        self.block_groups = [
            _BlockGroup(kind, _channels(f, width_multiplier), n, s, sk_ratio, net, se_ratio,
                        name=f"block_group{i + 1}")
            for i, (f, n, s) in enumerate(zip(GROUP_FILTERS, blocks, GROUP_STRIDES))]
        last = _channels(GROUP_FILTERS[-1], width_multiplier)
        self.feature_dim = 4 * last if kind == "bottleneck" else last
        for layer in self._frozen_layers():
            layer.trainable = False

    def _frozen_layers(self) -> List[keras.layers.Layer]:
        k = self.fine_tune_after_block
        if k < 0:
            return []
        return [self.stem] + self.block_groups[:k]

    def call(self, inputs, training=None, return_endpoints: bool = False):
        k = self.fine_tune_after_block
        x = tf.convert_to_tensor(inputs)
        out: Dict[str, tf.Tensor] = {}
        frozen = k >= 0
        initial_conv, x = self.stem(x, training=False if frozen else training)
        if frozen:
            initial_conv, x = tf.stop_gradient(initial_conv), tf.stop_gradient(x)
        out[ep.INITIAL_CONV], out[ep.INITIAL_MAX_POOL] = initial_conv, x
        for i, group in enumerate(self.block_groups):
            frozen = i < k
            x = group(x, training=False if frozen else training)
            if frozen:
                x = tf.stop_gradient(x)
            out[ep.BLOCK_GROUPS[i]] = x
        features = tf.reduce_mean(x, axis=[1, 2])
        if not return_endpoints:
            return features
        out[ep.FINAL_AVG_POOL] = features
        return out


def build_resnet(depth: int, width_multiplier: float = 1, sk_ratio: float = 0.0,
                 se_ratio: float = 0.0, cifar_stem: bool = False, global_bn: bool = False,
                 bn_decay: float = 0.9,
                 bn_epsilon: float = 1e-5, fine_tune_after_block: int = -1,
                 matmul_small_convs: bool = False, kernel_chooser=None,
                 name: Optional[str] = None) -> ResNet:
    """The SimCLR ResNet of ``depth`` (18, 34, 50, 101, 152, 200).

    Args:
      depth: the ResNet depth.
      width_multiplier: scales every channel count (0.25 and 0.5 give small CPU models).
      sk_ratio: selective-kernel ratio (SimCLRv2 uses 0.0625); 0 disables.
      se_ratio: squeeze-and-excitation ratio; 0 disables (``_SqueezeExcite``).
      cifar_stem: the 3x3/1 stem without max-pool, for images of 32 px and below.
      global_bn: batch-norm statistics over all replicas (synchronised layers). The caller
        decides: ``simclr_model.from_config`` asks for it only with several replicas, since on one
        the fused unsynchronised kernel computes the same statistics faster.
      bn_decay, bn_epsilon: batch-norm moving-average decay and epsilon.
      fine_tune_after_block: -1 trains everything; k in 0..4 freezes the stem and block
        groups 1..k (4: the whole encoder, for linear evaluation).
      matmul_small_convs: 3x3 float32 convolutions with few output positions run as one
        matmul over their patches (``convs.Conv``): the same function, faster on a CPU
        only; ``simclr_model.from_config`` asks for it only there (``convs.matmul_convs_fit``).
      kernel_chooser: decides per shape which small convolutions (with
        ``matmul_small_convs``) run as a matmul and which unsynchronised training batch norms
        run as ``cpu_batch_norm`` (``kernel_choice.KernelChooser``: measured on the machine);
        None: the matmul at fixed sizes, TF's batch norm.

    Raises:
      ValueError: naming a value outside what is accepted.
    """
    choices.check_choice("resnet_depth", depth, choices.RESNET_DEPTHS, flag=False)
    choices.check_positive("width_multiplier", width_multiplier, flag=False)
    choices.check_sk_ratio(sk_ratio, flag=False)
    choices.check_se_ratio(se_ratio, flag=False)
    choices.check_fine_tune_after_block(fine_tune_after_block, flag=False)
    net = _Settings(global_bn, bn_decay, bn_epsilon, matmul_small_convs, kernel_chooser)
    kwargs = {"name": name} if name else {}
    return ResNet(depth, width_multiplier, sk_ratio, cifar_stem, net, fine_tune_after_block,
                  se_ratio, **kwargs)
