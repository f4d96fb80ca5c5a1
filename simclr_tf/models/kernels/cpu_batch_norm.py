"""Training-mode batch norm (+ ReLU) on a CPU without oneDNN's batch-norm forward kernel.

oneDNN's forward batch norm is slow when it may use AVX2 only (``bnorm_tbb_jit:avx2``, several
times its AVX-512 kernel and its own backward: docs/performance.md). ``batch_norm_train``
computes the same function another way: the per-channel sums as matmuls with a row of ones
(shifted by a sample mean, so the variance does not cancel), then the normalisation as oneDNN's
depthwise 1x1 convolution with bias and ReLU fused; its gradient is TF's training-mode
batch-norm gradient (``FusedBatchNormGradV3``), whose kernel is fast. The layer asks a
``kernel_choice.KernelChooser`` per shape which way is faster on the machine.
"""

import dataclasses

import tensorflow as tf

# Rows of the batch whose mean shifts the sums of squares (any sample of the batch will do).
SHIFT_ROWS = 64


@dataclasses.dataclass(frozen=True)
class BatchNormShape:
    """A training-mode batch norm over [batch, height, width, channels], then ReLU or not."""

    batch: int
    height: int
    width: int
    channels: int
    relu: bool

    @property
    def key(self) -> str:
        return (f"bn b{self.batch} {self.height}x{self.width}x{self.channels}"
                f"{' relu' if self.relu else ''}")


def _forward(x, gamma, beta, epsilon: float, relu: bool):
    """Output, batch mean and (biased) batch variance, the sums as matmuls."""
    batch, height, width, channels = x.shape
    n = batch * height * width
    flat = tf.reshape(x, [n, channels])
    shift = tf.reduce_mean(flat[:min(n, SHIFT_ROWS)], 0)
    ones = tf.ones([1, n])
    mean = tf.matmul(ones, flat)[0] / n
    shifted_squares = tf.matmul(ones, tf.math.squared_difference(flat, shift))[0] / n
    variance = tf.maximum(shifted_squares - tf.square(mean - shift), 0.0)
    scale = gamma * tf.math.rsqrt(variance + epsilon)
    y = tf.nn.bias_add(tf.nn.depthwise_conv2d(
        x, tf.reshape(scale, [1, 1, channels, 1]), [1, 1, 1, 1], "VALID"), beta - mean * scale)
    return (tf.nn.relu(y) if relu else y), mean, variance


def _backward(dy, y, x, gamma, mean, variance, epsilon: float, relu: bool,
              reserve_space_3=None):
    """Gradients (x, gamma, beta): TF's training-mode batch-norm gradient, after ReLU's."""
    if relu:
        dy = tf.raw_ops.ReluGrad(gradients=dy, features=y)
    dx, dgamma, dbeta, _, _ = tf.raw_ops.FusedBatchNormGradV3(
        y_backprop=dy, x=x, scale=gamma, reserve_space_1=mean, reserve_space_2=variance,
        reserve_space_3=tf.zeros([0]) if reserve_space_3 is None else reserve_space_3,
        epsilon=epsilon, data_format="NHWC", is_training=True)
    return dx, dgamma, dbeta


def batch_norm_train(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, epsilon: float,
                     relu: bool):
    """Batch norm of ``x`` [B, H, W, C] (static shape, float32) with its batch statistics,
    then ReLU if ``relu``: (output, batch mean, unbiased batch variance), as
    ``FusedBatchNormV3`` gives them in training (its variance output is the unbiased one)."""
    n = x.shape[0] * x.shape[1] * x.shape[2]

    @tf.custom_gradient
    def norm(x, gamma, beta):
        y, mean, variance = _forward(x, gamma, beta, epsilon, relu)

        def grad(dy, *_):  # the statistics' outputs feed moving averages only
            return _backward(dy, y, x, gamma, mean, variance, epsilon, relu)

        return (y, mean, variance * (n / max(n - 1, 1))), grad

    return norm(x, gamma, beta)


def timed_pair(shape: BatchNormShape):
    """(ours, TF's) tf.functions of the forward pass and the gradients at ``shape``, with the
    gradient ops written out (a tape may not record inside a Keras layer's call), and their
    inputs."""
    size = [shape.batch, shape.height, shape.width, shape.channels]
    args = (tf.random.normal(size, seed=1), tf.ones([shape.channels]),
            tf.zeros([shape.channels]), tf.random.normal(size, seed=2))
    eps, relu = 1e-5, shape.relu

    def ours(x, gamma, beta, dy):
        y, mean, variance = _forward(x, gamma, beta, eps, relu)
        return (y,) + _backward(dy, y, x, gamma, mean, variance, eps, relu)

    def fused(x, gamma, beta, dy):
        y, mean, variance, r1, r2, r3 = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=gamma, offset=beta, mean=tf.zeros([0]), variance=tf.zeros([0]),
            epsilon=eps, data_format="NHWC", is_training=True)
        y = tf.nn.relu(y) if relu else y
        return (y,) + _backward(dy, y, x, gamma, r1, r2, eps, relu, r3)

    return (tf.function(ours, autograph=False), tf.function(fused, autograph=False), args)
