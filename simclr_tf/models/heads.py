"""The heads on top of the encoder: the projection head g and the linear (supervised) head.

Layer names are part of a contract with the optimizer (optim.EXCLUDE_FROM_WEIGHT_DECAY): every
batch-norm variable's name contains ``batch_normalization``, the only biases are the
supervised head's, and the supervised head is the only layer named ``head_supervised``.
"""

from typing import List, Optional, Tuple

import tensorflow as tf
import tf_keras as keras

from simclr_tf.core import choices


def _dense_initializer() -> keras.initializers.Initializer:
    # The original initialises every head's dense kernel with N(0, 0.01).
    return keras.initializers.RandomNormal(stddev=0.01)


class _DenseBN(keras.layers.Layer):
    """Dense (no bias: batch norm follows) + batch norm, one layer of the projection head."""

    def __init__(self, units: int, center: bool, global_bn: bool, bn_decay: float,
                 bn_epsilon: float, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(
            units, use_bias=False, kernel_initializer=_dense_initializer(), name="dense")
        # center=False on the output layer: no beta, as in the original (a bias before the
        # contrastive loss's normalisation would be redundant).
        self.bn = keras.layers.BatchNormalization(
            momentum=bn_decay, epsilon=bn_epsilon, center=center, scale=True,
            synchronized=global_bn, name="batch_normalization")

    def call(self, inputs, training=None):
        return self.bn(self.dense(inputs), training=training)


class ProjectionHead(keras.layers.Layer):
    """The projection head g: h -> z, in the modes none / linear / nonlinear (docs/method.md).

    ``nonlinear`` has ``num_proj_layers`` layers ``nl_0 .. nl_{L-1}``: the middle ones are
    dense (width = input width) + BN (with beta) + ReLU, the last is dense to
    ``proj_out_dim`` + BN without beta and without ReLU. ``linear`` is one dense to
    ``proj_out_dim`` + BN without beta. ``none`` returns its input.

    Calling it returns ``(z, hiddens)`` where ``hiddens`` is the list [input h, output of
    layer 1, ..., output of layer L] (middle outputs after their ReLU). ``ft_proj_selector``
    indexes that list for the fine-tuning tap (0 = h, 1 = after the first layer, -1 = z).
    """

    def __init__(self, mode: str = "nonlinear", num_proj_layers: int = 3,
                 proj_out_dim: int = 128, ft_proj_selector: int = 0, global_bn: bool = False,
                 bn_decay: float = 0.9, bn_epsilon: float = 1e-5,
                 name: str = "projection_head", **kwargs):
        super().__init__(name=name, **kwargs)
        choices.check_choice("proj_head_mode", mode, choices.PROJ_HEAD_MODES, flag=False)
        if mode == "nonlinear" and num_proj_layers < 1:
            raise ValueError(
                f"num_proj_layers={num_proj_layers} must be >= 1 for the nonlinear head.")
        if mode != "none" and proj_out_dim < 1:
            raise ValueError(f"proj_out_dim={proj_out_dim} must be >= 1.")
        self.mode = mode
        self.num_proj_layers = num_proj_layers
        self.proj_out_dim = proj_out_dim
        self.global_bn = global_bn
        self.bn_decay = bn_decay
        self.bn_epsilon = bn_epsilon
        num_hiddens = self.num_hiddens
        if not -num_hiddens <= ft_proj_selector < num_hiddens:
            raise ValueError(
                f"ft_proj_selector={ft_proj_selector} is out of range for proj_head_mode="
                f"{mode!r} with {num_hiddens} taps; use -{num_hiddens}..{num_hiddens - 1} "
                "(0 = encoder output, 1 = after the first projection layer, -1 = last).")
        self.ft_proj_selector = ft_proj_selector
        self.layers_: List[_DenseBN] = []

    @property
    def num_hiddens(self) -> int:
        """The number of fine-tuning taps: the input plus one per layer."""
        return {"none": 1, "linear": 2, "nonlinear": self.num_proj_layers + 1}[self.mode]

    def build(self, input_shape):
        width = int(input_shape[-1])
        num_layers = self.num_hiddens - 1
        for j in range(num_layers):
            last = j == num_layers - 1
            self.layers_.append(_DenseBN(
                self.proj_out_dim if last else width, center=not last,
                global_bn=self.global_bn, bn_decay=self.bn_decay,
                bn_epsilon=self.bn_epsilon, name=f"nl_{j}"))
        super().build(input_shape)

    def call(self, inputs, training=None) -> Tuple[tf.Tensor, List[tf.Tensor]]:
        hiddens = [inputs]
        x = inputs
        for j, layer in enumerate(self.layers_):
            x = layer(x, training=training)
            if j < len(self.layers_) - 1:
                x = tf.nn.relu(x)
            hiddens.append(x)
        return x, hiddens

    def select(self, hiddens: List[tf.Tensor]) -> tf.Tensor:
        """The fine-tuning tap ``hiddens[ft_proj_selector]``."""
        return hiddens[self.ft_proj_selector]


class SupervisedHead(keras.layers.Layer):
    """A linear classifier (dense with bias), named ``head_supervised``.

    Args:
      num_classes: the number of classes K; logits are [B, K].
      zero_init: start from zero weights (``zero_init_logits_layer``); else N(0, 0.01).
    """

    def __init__(self, num_classes: int, zero_init: bool = False,
                 name: str = "head_supervised", **kwargs):
        super().__init__(name=name, **kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes} must be >= 1.")
        self.num_classes = num_classes
        self.zero_init = zero_init
        self.dense = keras.layers.Dense(
            num_classes, use_bias=True,
            kernel_initializer="zeros" if zero_init else _dense_initializer(),
            bias_initializer="zeros", name="dense")

    def call(self, inputs, training=None) -> tf.Tensor:
        return self.dense(inputs)


def build_projection_head(proj_head_mode: str = "nonlinear", num_proj_layers: int = 3,
                          proj_out_dim: int = 128, ft_proj_selector: int = 0,
                          global_bn: bool = False, bn_decay: float = 0.9,
                          ) -> ProjectionHead:
    """Builds the projection head with the original's flag names (see ProjectionHead)."""
    return ProjectionHead(proj_head_mode, num_proj_layers, proj_out_dim, ft_proj_selector,
                          global_bn=global_bn, bn_decay=bn_decay)


def build_supervised_head(num_classes: Optional[int], zero_init: bool = False,
                          ) -> Optional[SupervisedHead]:
    """A supervised head, or None when there are no labels (``num_classes`` None or 0)."""
    if not num_classes:
        return None
    return SupervisedHead(num_classes, zero_init=zero_init)
