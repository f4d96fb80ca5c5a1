"""The training step, without a loop around it: the losses of one replica's batch, and the
replica step that turns them into one optimizer update.

``compute_losses`` is a function of the model's outputs: the contrastive loss over the two
views (the part of ``simclr_tf.losses`` that ``--loss`` names, NT-Xent by default;
pretraining), the supervised cross-entropy when the
model has a supervised head (the probe sees both views, and its gradient stops at its
input), and the metrics of both.
``make_replica_step`` adds the on-device blur, the weight decay, loss scaling and the update;
with ``--embedding_chunks`` > 1 its gradients come from ``chunked_step`` (the batch embedded
in chunks, the same loss).
Run it with ``strategy.run(step, args=(inputs,))``, as the trainer does, or with
``run_step`` (the replicas' loss summed and their metrics averaged), on a batch the input
pipeline distributed or one ``split_batch`` cut (the benchmark and the tests).
"""

from typing import Callable, Dict, List, Optional, Tuple

import tensorflow as tf
import tf_keras as keras

from simclr_tf.core import endpoints as ep
from simclr_tf.data import augment
from simclr_tf.training import chunked_step, distill, losses, optim
from simclr_tf.training import step_metrics as metrics_lib

Metrics = Dict[str, tf.Tensor]


def metric_names(pretraining: bool, supervised_head: bool,
                 distill_weight: Optional[float] = None) -> List[str]:
    """The names of the metrics a step returns, in the order of the progress logs
    (``distill_weight``: a distillation step's)."""
    names = ["loss", "weight_decay"]
    if distill_weight is not None:
        return names + distill.metric_names(distill_weight)
    if pretraining:
        names += ["contrast_loss", "contrast_acc", "contrast_entropy"]
    if supervised_head:
        names += ["supervised_loss", "supervised_acc"]
    return names


def compute_losses(outputs: Dict[str, tf.Tensor], labels: tf.Tensor, cfg,
                   teacher_logits: Optional[tf.Tensor] = None) -> Tuple[tf.Tensor, Metrics]:
    """The loss of one replica's batch (before weight decay) and its metrics.

    ``outputs`` are the model's (``endpoints``); when pretraining, its batch is the two
    views stacked ``[2B, ...]`` and ``labels`` are the B images' labels. Distilling, the
    loss is ``distill.compute_losses`` of the teacher's logits and the student's."""
    if cfg.train_mode == "distill":
        return distill.compute_losses(teacher_logits, outputs[ep.LOGITS_SUP], labels,
                                      cfg.distill_temperature, cfg.distill_weight)
    loss = tf.constant(0.0)
    metrics: Metrics = {}
    if cfg.train_mode == "pretrain":
        z1, z2 = tf.split(outputs[ep.PROJ_HEAD_OUTPUT], 2, axis=0)
        con_loss, logits, con_labels = losses.of_config(z1, z2, labels, cfg)
        loss += con_loss
        metrics["contrast_loss"] = con_loss
        metrics["contrast_acc"] = metrics_lib.contrastive_accuracy(logits, con_labels)
        metrics["contrast_entropy"] = metrics_lib.contrastive_entropy(logits)
        labels = tf.concat([labels, labels], axis=0)  # the probe sees both views
    if ep.LOGITS_SUP in outputs:
        sup_loss = losses.supervised_cross_entropy(labels, outputs[ep.LOGITS_SUP])
        loss += sup_loss
        metrics["supervised_loss"] = sup_loss
        metrics["supervised_acc"] = metrics_lib.top_k_accuracy(labels, outputs[ep.LOGITS_SUP], 1)
    return loss, metrics


def make_replica_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, cfg,
                      num_replicas: int, teacher: Optional[distill.Teacher] = None
                      ) -> Callable:
    """``step((images, labels)) -> (loss / num_replicas, metrics)``: one replica's share of a
    training step, the optimizer update included (``apply_gradients`` sums the replicas'
    gradients, so each replica's loss is divided by ``num_replicas``). Distilling, the
    ``teacher`` labels the replica's images in the step."""
    loss_scaling = isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer)
    blur = cfg.device_blur
    chunks = cfg.embedding_chunks

    def replica_step(inputs):
        images, labels = inputs
        if blur:
            images = augment.blur_views(images, cfg.seed, optimizer.iterations, num_replicas)
        teacher_logits = teacher.logits(images) if teacher is not None else None
        variables = model.trainable_variables
        if chunks > 1:
            loss, decay, metrics, grads = _chunked(images, labels, variables)
        else:
            with tf.GradientTape() as tape:
                loss, metrics = compute_losses(model(images, training=True), labels, cfg,
                                               teacher_logits)
                decay = optim.weight_decay_loss(variables, cfg.weight_decay, cfg.optimizer)
                loss += decay
                scaled_loss = scaled(loss)
            grads = tape.gradient(scaled_loss, variables)
        if loss_scaling:
            grads = optimizer.get_unscaled_gradients(grads)
        # Variables that do not reach the loss (e.g. the projection head when fine-tuning
        # from its input) have no gradient; leave them out rather than warn every step.
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        metrics.update(loss=loss, weight_decay=decay)
        return loss / num_replicas, metrics

    def scaled(loss):
        loss = loss / num_replicas
        # float16: scale the loss so small gradients survive
        return optimizer.get_scaled_loss(loss) if loss_scaling else loss

    def _chunked(images, labels, variables):
        """The contrastive loss's gradients with the batch embedded in chunks
        (``chunked_step``), and the weight decay's, added."""
        loss, metrics, grads = chunked_step.gradients(
            model, images, variables, chunks, lambda outputs: compute_losses(
                outputs, labels, cfg), scaled)
        with tf.GradientTape() as tape:
            decay = optim.weight_decay_loss(variables, cfg.weight_decay, cfg.optimizer)
            scaled_decay = scaled(decay)
        decay_grads = tape.gradient(scaled_decay, variables)
        grads = [chunked_step.add_gradient(g, d) for g, d in zip(grads, decay_grads)]
        return loss + decay, decay, metrics, grads

    return tf.function(replica_step, jit_compile=True) if cfg.jit_compile else replica_step


def split_batch(strategy: tf.distribute.Strategy, batch):
    """A global batch (a tensor or a nest of tensors sharing their leading size B) as the
    strategy's per-replica values: replica r gets the r-th of equal consecutive slices, as
    the input pipeline would give it. B must divide by the number of replicas."""
    replicas = strategy.num_replicas_in_sync
    size = tf.nest.flatten(batch)[0].shape[0]
    if size % replicas:
        raise ValueError(f"a batch of {size} does not split across {replicas} replicas.")
    n = size // replicas

    def local(ctx):
        start = ctx.replica_id_in_sync_group * n
        return tf.nest.map_structure(lambda t: t[start:start + n], batch)

    return strategy.experimental_distribute_values_from_function(local)


def run_step(strategy: tf.distribute.Strategy, replica_step: Callable, inputs
             ) -> Tuple[tf.Tensor, Metrics]:
    """One step of ``replica_step`` (``make_replica_step``'s) on distributed ``inputs``:
    (the loss, the sum of the replicas' shares; each metric averaged over the replicas).
    Call it eagerly or inside a tf.function."""
    loss, metrics = strategy.run(replica_step, args=(inputs,))
    mean = {name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
            for name, value in metrics.items()}
    return strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None), mean
