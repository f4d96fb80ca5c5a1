"""The SimCLR model: ResNet encoder f, projection head g and an optional linear head.

The model takes images [B, H, W, 3k]: k views of each image stacked on the channel axis (the
original's input layout, so the input pipeline can emit one tensor). It splits the views and
concatenates them along the batch, so one forward pass sees all kB images and batch norm
normalises over both views together. Every output is [kB, ...], view 1 first.
"""

import contextlib
from typing import Dict, Optional

import tensorflow as tf
import tf_keras as keras

from simclr_tf.core import choices
from simclr_tf.core import endpoints as ep
from simclr_tf.models import heads as heads_lib
from simclr_tf.models import resnet, saved_files
from simclr_tf.models.kernels import convs, kernel_choice


def split_views(images: tf.Tensor) -> tf.Tensor:
    """[B, H, W, 3k] -> [kB, H, W, 3]: the k views concatenated along the batch."""
    channels = images.shape[-1]
    if channels is None or channels % 3:
        raise ValueError(
            f"images must have 3 channels per view (3, 6, ...); got {channels} channels in "
            f"shape {images.shape}.")
    num_views = channels // 3
    if num_views == 1:
        return images
    return tf.concat(tf.split(images, num_views, axis=-1), axis=0)


class SimCLRModel(keras.Model):
    """Encoder + projection head (+ linear head), returning a dict keyed by endpoint names.

    Args:
      encoder: a ``resnet.ResNet`` (or any layer mapping images to [B, C] that accepts
        ``return_endpoints``).
      projection_head: a ``heads.ProjectionHead``.
      supervised_head: a ``heads.SupervisedHead`` or None.
      mode: ``pretrain``: the supervised head reads ``stop_gradient`` of its tap, so labels
        never reach the encoder or the projection head (the online linear probe).
        ``finetune``: gradients flow from the supervised head into the network, except into
        the parts the encoder freezes. With the encoder fully frozen
        (``fine_tune_after_block=4``, linear evaluation) the projection head is frozen too
        and runs its batch norm in inference mode.
    """

    def __init__(self, encoder: keras.layers.Layer, projection_head: heads_lib.ProjectionHead,
                 supervised_head: Optional[heads_lib.SupervisedHead] = None,
                 mode: str = "pretrain", name: str = "simclr", **kwargs):
        super().__init__(name=name, **kwargs)
        choices.check_choice("mode", mode, choices.TRAIN_MODES, flag=False)
        self.encoder = encoder
        self.projection_head = projection_head
        self.supervised_head = supervised_head
        self.mode = mode
        self.projection_head_frozen = (
            mode == "finetune" and getattr(encoder, "fine_tune_after_block", -1) >= 4)
        if self.projection_head_frozen:
            self.projection_head.trainable = False

    def call(self, images, training=None, return_endpoints: bool = False
             ) -> Dict[str, tf.Tensor]:
        """Runs the model.

        Args:
          images: float [B, H, W, 3k] in [0, 1], k >= 1 views stacked on channels.
          training: batch-norm mode (batch statistics and moving-average updates when True).
          return_endpoints: also return the encoder's endpoints (stem, block groups).

        Returns:
          A dict: ``final_avg_pool`` and ``proj_head_input`` [kB, C] (the same tensor),
          ``proj_head_output`` [kB, proj_out_dim], ``logits_sup`` [kB, K] when there is a
          supervised head, and with ``return_endpoints`` every ``endpoints.ENCODER_ENDPOINTS``.
        """
        x = split_views(images)
        outputs = {}
        if return_endpoints:
            outputs.update(self.encoder(x, training=training, return_endpoints=True))
            h = outputs[ep.FINAL_AVG_POOL]
        else:
            h = self.encoder(x, training=training)
        head_training = False if self.projection_head_frozen else training
        head_input = tf.stop_gradient(h) if self.projection_head_frozen else h
        z, hiddens = self.projection_head(head_input, training=head_training)
        outputs[ep.FINAL_AVG_POOL] = h
        outputs[ep.PROJ_HEAD_INPUT] = h
        outputs[ep.PROJ_HEAD_OUTPUT] = z
        if self.supervised_head is not None:
            tap = self.projection_head.select(hiddens)
            if self.mode == "pretrain" or self.projection_head_frozen:
                # The probe must not leak labels into the representation it measures.
                tap = tf.stop_gradient(tap)
            outputs[ep.LOGITS_SUP] = self.supervised_head(tap, training=training)
        return outputs


def build_model(resnet_depth: int = 50, width_multiplier: float = 1, sk_ratio: float = 0.0,
                se_ratio: float = 0.0, image_size: int = 224, global_bn: bool = False,
                bn_decay: float = 0.9,
                proj_head_mode: str = "nonlinear", num_proj_layers: int = 3,
                proj_out_dim: int = 128, ft_proj_selector: int = 0,
                num_classes: Optional[int] = None, mode: str = "pretrain",
                fine_tune_after_block: int = -1, zero_init_logits_layer: bool = False,
                matmul_small_convs: bool = False, kernel_chooser=None) -> SimCLRModel:
    """Builds a SimCLRModel from the original's flag values.

    The CIFAR stem (3x3 stride 1, no max-pool) is used for ``image_size`` <= 32, as in the
    original. ``num_classes`` None or 0 builds no supervised head. ``matmul_small_convs``,
    ``kernel_chooser``: see ``resnet.build_resnet``. Call the model once (e.g.
    on ``tf.zeros([1, image_size, image_size, 3])``) to create its variables.
    """
    choices.check_pretraining_trains_everything(fine_tune_after_block, mode, flag=False)
    encoder = resnet.build_resnet(
        resnet_depth, width_multiplier=width_multiplier, sk_ratio=sk_ratio, se_ratio=se_ratio,
        cifar_stem=image_size <= 32, global_bn=global_bn, bn_decay=bn_decay,
        fine_tune_after_block=fine_tune_after_block, matmul_small_convs=matmul_small_convs,
        kernel_chooser=kernel_chooser)
    head = heads_lib.build_projection_head(
        proj_head_mode, num_proj_layers, proj_out_dim, ft_proj_selector,
        global_bn=global_bn, bn_decay=bn_decay)
    supervised = heads_lib.build_supervised_head(num_classes, zero_init=zero_init_logits_layer)
    return SimCLRModel(encoder, head, supervised, mode=mode)


class HubClassifier(keras.Model):
    """A linear head on an exported SavedModel (``simclr-finetune --hub_module``).

    ``trainable=False`` is linear evaluation: the export runs in inference mode and only the
    head trains. It returns the export's endpoints plus ``logits_sup``, like SimCLRModel.
    """

    def __init__(self, path: str, num_classes: int, trainable: bool,
                 zero_init_logits_layer: bool = False, name: str = "simclr", **kwargs):
        super().__init__(name=name, **kwargs)
        import tensorflow_hub as hub  # noqa: PLC0415 (only this path needs it)

        saved_files.export_outputs(path, "--hub_module")  # one line if not an export of ours
        with saved_files.reading(path, f"--hub_module={path!r}"):
            self.hub_layer = hub.KerasLayer(path, trainable=trainable, name="hub_module")
        self.supervised_head = heads_lib.build_supervised_head(
            num_classes, zero_init=zero_init_logits_layer)
        self.projection_head_frozen = not trainable
        self.mode = "finetune"

    def call(self, images, training=None, return_endpoints: bool = False
             ) -> Dict[str, tf.Tensor]:
        outputs = dict(self.hub_layer(images, training=training))
        features = outputs[ep.FINAL_AVG_POOL]
        if self.projection_head_frozen:
            features = tf.stop_gradient(features)
        outputs[ep.LOGITS_SUP] = self.supervised_head(features, training=training)
        if not return_endpoints:
            outputs = {k: outputs[k] for k in (ep.FINAL_AVG_POOL, ep.PROJ_HEAD_INPUT,
                                               ep.PROJ_HEAD_OUTPUT, ep.LOGITS_SUP)
                       if k in outputs}
        return outputs


@contextlib.contextmanager
def precision_policy(precision: str):
    """Keras's dtype policy ``precision`` ("float32", "mixed_float16", "mixed_bfloat16") for
    the layers built inside the block; the process's policy is restored after it."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def from_config(cfg, num_classes: Optional[int],
                strategy: Optional[tf.distribute.Strategy] = None,
                sync_bn: Optional[bool] = None) -> keras.Model:
    """The model of a ``config.Config``, its layers computing in ``cfg.precision``
    (variables float32), every variable created; ``num_classes`` None: no supervised head.

    The choices that depend on the machine are made here, once, for ``strategy`` (default:
    the one in scope): batch norm synchronised across replicas only with ``cfg.global_bn``
    and several replicas (on one, the fused kernel computes the same statistics faster), and
    the matmul convolutions only with ``cfg.matmul_small_convs`` on a CPU in float32; there,
    with ``cfg.calibrate_kernels`` (and not ``cfg.deterministic``), the small convolutions
    and the training batch norms take the way this machine runs faster, measured once per
    shape (``kernel_choice``).
    ``sync_bn`` True or False overrides the batch-norm choice (the benchmark's variants)."""
    strategy = strategy or tf.distribute.get_strategy()
    if sync_bn is None:
        sync_bn = cfg.global_bn and strategy.num_replicas_in_sync > 1
    fits = convs.matmul_convs_fit(cfg.precision, strategy)  # a CPU, float32
    matmul = cfg.matmul_small_convs and fits
    # A measured choice rests on timings, and so would the rounding of a --deterministic run:
    # that takes the fixed choice, the same on every run.
    kernel_chooser = (kernel_choice.KernelChooser(kernel_choice.default_cache_file())
                      if fits and cfg.calibrate_kernels and not cfg.deterministic else None)
    with precision_policy(cfg.precision):
        if cfg.hub_module:
            model = HubClassifier(cfg.hub_module, num_classes,
                                  trainable=cfg.effective_fine_tune_after_block != 4,
                                  zero_init_logits_layer=cfg.zero_init_logits_layer)
        else:
            student = cfg.train_mode == "distill"  # SimCLRv2's students have no projection head
            model = build_model(
                resnet_depth=cfg.resnet_depth, width_multiplier=cfg.width_multiplier,
                sk_ratio=cfg.sk_ratio, se_ratio=cfg.se_ratio, image_size=cfg.image_size,
                global_bn=sync_bn,
                bn_decay=cfg.batch_norm_decay,
                proj_head_mode="none" if student else cfg.proj_head_mode,
                num_proj_layers=cfg.num_proj_layers, proj_out_dim=cfg.proj_out_dim,
                ft_proj_selector=0 if student else cfg.ft_proj_selector,
                num_classes=num_classes, mode="finetune" if student else cfg.train_mode,
                fine_tune_after_block=cfg.effective_fine_tune_after_block,
                zero_init_logits_layer=cfg.zero_init_logits_layer,
                matmul_small_convs=matmul, kernel_chooser=kernel_chooser)
        # Create every variable now, so restoring assigns at once and shape errors surface.
        model(tf.zeros([1, cfg.image_size, cfg.image_size, 3]), training=False)
        return model
