"""The gradients of one replica's pretraining loss with its batch embedded in chunks
(``--embedding_chunks=K``; gradient caching, Gao et al. 2021).

The contrastive loss of a view depends on every other view of the batch, so the batch cannot
be cut into smaller batches whose gradients are summed (that would be another loss, with
fewer negatives). Its parameters' gradient factors through the embeddings instead:
dL/dtheta = sum over chunks c of (dz_c/dtheta)^T dL/dz_c. So:

1. every chunk runs forward without a tape, one after another, and only the outputs the
   loss reads are kept (the projections, and the probe's logits);
2. the loss of the whole batch and its gradient with respect to those outputs are computed
   once, from them;
3. every chunk runs forward again under a tape, one after another, and backpropagates its
   share of that gradient (the surrogate sum(output x its cached gradient)); the chunks'
   parameter gradients are summed.

The model draws nothing at random, so the two forward passes of a chunk are the same
computation (the blur is drawn before the batch is cut). Batch norm in training mode
normalises each chunk on its own; its moving statistics, updated by the first pass, are put
back before the second, which updates them once per chunk. Each chunk waits for the one
before it (control dependencies), so only one chunk's activations are alive at a time.
"""

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import tensorflow as tf
import tf_keras as keras

from simclr_tf.core import endpoints as ep

# The outputs the pretraining loss reads, all laid out [view 1 rows; view 2 rows].
LOSS_OUTPUTS = (ep.PROJ_HEAD_OUTPUT, ep.LOGITS_SUP)
Outputs = Dict[str, tf.Tensor]


def check_chunks_divide(replica_batch: int, chunks: int):
    """A clear error when a replica's share of the batch does not cut into ``chunks``."""
    if replica_batch % chunks:
        fits = [k for k in range(1, chunks + 1) if replica_batch % k == 0][-1]
        raise ValueError(
            f"--embedding_chunks={chunks} does not divide a replica's {replica_batch} images "
            f"(--train_batch_size / replicas); use a divisor of {replica_batch}, e.g. {fits}.")


def merge(chunk_outputs: Sequence[tf.Tensor]) -> tf.Tensor:
    """The chunks' ``[2b, ...]`` outputs (each ``[view 1; view 2]``) as the whole batch's
    ``[2B, ...]``: every chunk's first views, then every chunk's second views."""
    halves = [tf.split(out, 2, axis=0) for out in chunk_outputs]
    return tf.concat([h[0] for h in halves] + [h[1] for h in halves], axis=0)


def unmerge(whole: tf.Tensor, chunks: int) -> List[tf.Tensor]:
    """``merge``'s inverse: the whole batch's ``[2B, ...]`` as the chunks' ``[2b, ...]``."""
    first, second = (tf.split(view, chunks, axis=0) for view in tf.split(whole, 2, axis=0))
    return [tf.concat([a, b], axis=0) for a, b in zip(first, second)]


def _after(x: tf.Tensor, before: Sequence[tf.Tensor]) -> tf.Tensor:
    """``x``, not computed before ``before`` (so the chunks run one after another)."""
    with tf.control_dependencies(list(before)):
        return tf.identity(x)


def _kept(outputs: Outputs) -> Outputs:
    return {k: outputs[k] for k in LOSS_OUTPUTS if k in outputs}


def _embed(model: keras.Model, pieces: Sequence[tf.Tensor]) -> List[Outputs]:
    """Pass 1: each chunk's loss outputs, without a tape, one chunk after another."""
    outputs, previous = [], []
    for piece in pieces:
        kept = _kept(model(_after(piece, previous), training=True))
        outputs.append({k: tf.stop_gradient(v) for k, v in kept.items()})
        previous = list(kept.values())
    return outputs


def moving_statistics(model: keras.Model) -> List[tf.Variable]:
    """The moving means and variances of the model's batch norm layers (any kind: Keras's,
    its synchronised one, or another with ``moving_mean`` and ``moving_variance``)."""
    return [v for layer in model.submodules
            if hasattr(layer, "moving_mean") and hasattr(layer, "moving_variance")
            for v in (layer.moving_mean, layer.moving_variance)]


def add_gradient(total: Optional[tf.Tensor], grad: Optional[tf.Tensor]) -> Optional[tf.Tensor]:
    """``total + grad``, where either may be None (a variable the loss does not reach)."""
    if grad is None:
        return total
    grad = tf.convert_to_tensor(grad)  # an IndexedSlices (none here) would not add
    return grad if total is None else total + grad


def gradients(model: keras.Model, images: tf.Tensor, variables: Sequence[tf.Variable],
              chunks: int, loss_fn: Callable[[Outputs], Tuple[tf.Tensor, Dict]],
              scale_fn: Callable[[tf.Tensor], tf.Tensor]):
    """(loss, metrics, gradients of ``scale_fn(loss)`` with respect to ``variables``) of
    ``loss_fn`` on the model's outputs for ``images`` (``[B, H, W, 6]``, the two views on
    channels), embedding the batch in ``chunks`` pieces (module doc)."""
    if images.shape[0] is not None:
        check_chunks_divide(images.shape[0], chunks)
    pieces = tf.split(images, chunks, axis=0)
    stats = moving_statistics(model)
    saved = [tf.identity(v) for v in stats]  # before pass 1 (reads and writes of a variable
    cached = _embed(model, pieces)  # run in program order inside a tf.function)
    for v, value in zip(stats, saved):
        v.assign(value)
    whole = {k: merge([c[k] for c in cached]) for k in cached[0]}
    with tf.GradientTape() as tape:
        tape.watch(whole)
        loss, metrics = loss_fn(whole)
        scaled = scale_fn(loss)
    cotangents = tape.gradient(scaled, whole)
    shares = {k: unmerge(g, chunks) for k, g in cotangents.items() if g is not None}
    total: List[Optional[tf.Tensor]] = [None] * len(variables)
    previous = [g for s in shares.values() for g in s]  # after pass 1 and the loss
    for i, piece in enumerate(pieces):
        with tf.GradientTape() as tape:
            outputs = _kept(model(_after(piece, previous), training=True))
            surrogate = tf.add_n([
                tf.reduce_sum(tf.cast(outputs[k], tf.float32) * tf.cast(g[i], tf.float32))
                for k, g in shares.items()])
        grads = tape.gradient(surrogate, variables)
        total = [add_gradient(t, g) for t, g in zip(total, grads)]
        previous = [t for t in total if t is not None]
    return loss, metrics, total
