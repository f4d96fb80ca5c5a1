"""The convolutions of the ResNet: TF's, or on a CPU a matmul over patches for small ones.

``Conv`` is a convolution without bias and with the original's fixed padding. With
``matmul``, float32 3x3 convolutions with few output positions run on a CPU as
``conv3x3_as_matmul`` (one gather of the patches and one matmul, with matmul gradients): the
same function up to float rounding, faster than TF's oneDNN kernels for those shapes (the
measured figures are in docs/performance.md). The model builder turns ``matmul`` on only for
float32 on a CPU (``matmul_convs_fit``); exports trace inside ``tf_kernels(model)``.
"""

import contextlib
import dataclasses

import numpy as np
import tensorflow as tf
import tf_keras as keras

# With ``matmul``, a 3x3 convolution whose output has at most this many positions
# (height x width; by stride) runs as one matmul over its patches: the shapes where TF's
# oneDNN kernels are slower than a matmul (measured in docs/performance.md).
MATMUL_CONV_MAX_POSITIONS = {1: 16, 2: 49}
# With a chooser (``kernel_choice.KernelChooser``), the convolutions with at most this many output
# positions are candidates: the chooser measures each shape on the machine and decides.
CANDIDATE_MAX_POSITIONS = {1: 64, 2: 64}


@dataclasses.dataclass(frozen=True)
class ConvShape:
    """A 3x3 convolution as ``convs.Conv`` runs it: the (padded, for a stride > 1) input
    [batch, height, width, channels], its filters and its stride."""

    batch: int
    height: int
    width: int
    channels: int
    filters: int
    stride: int

    @property
    def key(self) -> str:
        return (f"b{self.batch} {self.height}x{self.width}x{self.channels}->{self.filters} "
                f"s{self.stride}")


def matmul_convs_fit(precision: str, strategy: tf.distribute.Strategy) -> bool:
    """Whether the matmul convolutions suit this machine: float32 on CPUs only (no GPU or
    TPU visible, not a TPU strategy). The model builder asks once, from the config."""
    if precision != "float32":
        return False
    if tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"):
        return False
    return "TPU" not in type(strategy).__name__


@contextlib.contextmanager
def tf_kernels(model: tf.Module):
    """Every layer of ``model`` traced inside runs TF's kernels: each ``Conv`` TF's
    convolution op, each batch norm with a kernel chooser Keras's layer (``export`` traces in
    here, so that a SavedModel made on a CPU runs as well on a GPU or a TPU)."""
    convolutions = [m for m in model.submodules if isinstance(m, Conv) and m.matmul]
    choosers = [m for m in model.submodules
                if not isinstance(m, Conv) and getattr(m, "chooser", None) is not None]
    saved = [m.chooser for m in choosers]
    for layer in convolutions:
        layer.matmul = False
    for layer in choosers:
        layer.chooser = None
    try:
        yield
    finally:
        for layer in convolutions:
            layer.matmul = True
        for layer, chooser in zip(choosers, saved):
            layer.chooser = chooser


def _valid_size(size: int, stride: int) -> int:
    """Output length of a 3x3 VALID convolution along an axis of ``size``."""
    return (size - 3) // stride + 1


def _patches(x: tf.Tensor, stride: int):
    """The 3x3 patches of ``x`` [B, H, W, C] (no padding) as rows [B * P, 9 * C], in the
    order of a [3, 3, C, F] kernel reshaped to [9 * C, F]; also the output's (rows, cols)."""
    _, height, width, channels = x.shape
    rows, cols = _valid_size(height, stride), _valid_size(width, stride)
    top = (np.arange(rows) * stride)[:, None, None, None] + np.arange(3)[None, None, :, None]
    left = (np.arange(cols) * stride)[None, :, None, None] + np.arange(3)[None, None, None, :]
    index = (top * width + left).reshape(rows * cols, 9).astype(np.int32)
    flat = tf.reshape(x, [-1, height * width, channels])
    return tf.reshape(tf.gather(flat, index, axis=1), [-1, 9 * channels]), rows, cols


def _pad1(x: tf.Tensor) -> tf.Tensor:
    return tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])


def matmul_forward(x: tf.Tensor, kernel: tf.Tensor, stride: int):
    """The forward pass of ``conv3x3_as_matmul``: its output and the patches its gradients
    use."""
    channels, filters = kernel.shape[2], kernel.shape[3]
    patches, rows, cols = _patches(_pad1(x) if stride == 1 else x, stride)
    y = tf.matmul(patches, tf.reshape(kernel, [9 * channels, filters]))
    return tf.reshape(y, [-1, rows, cols, filters]), patches


def matmul_backward(dy: tf.Tensor, patches: tf.Tensor, x: tf.Tensor, kernel: tf.Tensor,
                    stride: int):
    """The gradients (input's, kernel's) of ``conv3x3_as_matmul`` for the output's ``dy``."""
    channels, filters = kernel.shape[2], kernel.shape[3]
    dkernel = tf.matmul(patches, tf.reshape(dy, [-1, filters]), transpose_a=True)
    if stride == 1:
        turned = tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])
        dpatches, _, _ = _patches(_pad1(dy), 1)
        dx = tf.matmul(dpatches, tf.reshape(turned, [9 * filters, channels]))
        dx = tf.reshape(dx, tf.shape(x))
    else:
        dx = tf.raw_ops.Conv2DBackpropInput(
            input_sizes=tf.shape(x), filter=kernel, out_backprop=dy,
            strides=[1, stride, stride, 1], padding="VALID")
    return dx, tf.reshape(dkernel, tf.shape(kernel))


def conv3x3_as_matmul(x: tf.Tensor, kernel: tf.Tensor, stride: int) -> tf.Tensor:
    """``tf.nn.conv2d`` of ``x`` [B, H, W, C] (static H, W) with ``kernel`` [3, 3, C, F] as one
    matmul over the patches; stride 1 pads SAME, a larger stride convolves VALID.

    The same function (its sums run in another order, so results differ by float rounding).
    The kernel's gradient is one matmul over the patches kept from the forward pass; the
    input's, at stride 1, is the SAME convolution of the output's gradient with the kernel
    turned by 180 degrees and its channel axes swapped (a matmul again), and at a larger
    stride TF's transposed convolution.
    """
    @tf.custom_gradient
    def conv(x, kernel):
        y, patches = matmul_forward(x, kernel, stride)
        return y, lambda dy: matmul_backward(dy, patches, x, kernel, stride)

    return conv(x, kernel)


class Conv(keras.layers.Layer):
    """Convolution without bias and with the original's fixed padding.

    Stride 1 pads ``SAME``; a larger stride pads k - 1 in total (``(k - 1) // 2`` before) and
    then convolves ``VALID``, so the output does not depend on the input's parity. With
    ``matmul``, float32 3x3 convolutions with few output positions run on a CPU as
    ``conv3x3_as_matmul``: those within ``MATMUL_CONV_MAX_POSITIONS``, or with a ``chooser``
    (a callable on a ``kernel_choice.ConvShape``) those within ``CANDIDATE_MAX_POSITIONS`` that
    it picks.
    """

    def __init__(self, filters: int, kernel_size: int, strides: int = 1, matmul: bool = False,
                 chooser=None, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size, self.strides, self.matmul = kernel_size, strides, matmul
        self.chooser = chooser
        self.conv = keras.layers.Conv2D(
            filters, kernel_size, strides=strides, use_bias=False,
            padding="same" if strides == 1 else "valid",
            kernel_initializer=keras.initializers.VarianceScaling(), name="conv2d")

    def build(self, input_shape):
        with tf.name_scope(self.conv.name):  # the variable names of a called Conv2D
            self.conv.build(input_shape)
        super().build(input_shape)

    def call(self, x):
        if self.strides > 1:
            total = self.kernel_size - 1
            begin = total // 2
            x = tf.pad(x, [[0, 0], [begin, total - begin], [begin, total - begin], [0, 0]])
        if self._as_matmul(x):
            return conv3x3_as_matmul(x, tf.convert_to_tensor(self.conv.kernel), self.strides)
        return self.conv(x)

    def _as_matmul(self, x: tf.Tensor) -> bool:
        height, width = x.shape[1], x.shape[2]
        if (not self.matmul or self.kernel_size != 3 or x.dtype != tf.float32
                or height is None or width is None):
            return False
        pad = 2 if self.strides == 1 else 0  # stride 1 pads SAME inside conv3x3_as_matmul
        positions = (_valid_size(height + pad, self.strides)
                     * _valid_size(width + pad, self.strides))
        if self.chooser is None:
            return positions <= MATMUL_CONV_MAX_POSITIONS.get(self.strides, 0)
        if (positions > CANDIDATE_MAX_POSITIONS.get(self.strides, 0) or x.shape[0] is None
                or tf.executing_eagerly()):  # the chooser decides for traced steps only
            return False
        return self.chooser(ConvShape(
            x.shape[0], height, width, x.shape[3], self.conv.filters, self.strides))
