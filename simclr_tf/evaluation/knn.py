"""The kNN monitor: how well the encoder's features separate the classes, while pretraining.

Every evaluation (each checkpoint interval) embeds a bank of training images and the eval
split with the encoder in inference mode (centre crop, no augmentation), and classifies each
eval image by the weighted vote of its k nearest bank images: cosine similarity s_i of the
L2-normalised pooled features (``final_avg_pool``), each of the k neighbours voting for its
class with weight exp(s_i / temperature), the class with the largest sum winning. This is the
weighted kNN of Wu et al. (2018, "Unsupervised feature learning via non-parametric instance
discrimination"), with the k = 200 of that paper and the temperature 0.1 of the kNN monitors
that lightly and MoCo's CIFAR-10 demo run. It needs labels, never trains anything, and reads
the model's weights as they are.

On every replica: each replica embeds its share of a batch, the features and labels are
gathered across replicas inside the step (``ReplicaContext.all_gather``), so every worker
holds the whole bank; the classification step runs on every replica against that bank. The
batches are padded to a fixed size (label -1) so the steps keep static shapes on a TPU.
"""

import time
from typing import Dict

import numpy as np
import orbit
import tensorflow as tf

from simclr_tf.core import endpoints as ep
from simclr_tf.data import sources

NO_LABEL = -1  # the label of a padding row


def weighted_knn_scores(queries: tf.Tensor, bank: tf.Tensor, bank_labels: tf.Tensor,
                        num_classes: int, k: int = 200, temperature: float = 0.1) -> tf.Tensor:
    """The weighted kNN vote of every query, per class.

    Args:
      queries: [q, d] L2-normalised features.
      bank: [n, d] L2-normalised features of the labelled bank.
      bank_labels: [n] int class of each bank row, in [0, num_classes).
      num_classes: C.
      k: neighbours per query (at most n are used).
      temperature: a neighbour at cosine similarity s votes exp(s / temperature).

    Returns:
      [q, C] float32: the summed weights of each class among the query's k nearest rows.
    """
    similarity = tf.matmul(queries, bank, transpose_b=True)  # [q, n]
    k = min(int(k), int(bank.shape[0]))
    nearest, index = tf.math.top_k(similarity, k)  # [q, k]
    weights = tf.exp(nearest / temperature)
    labels = tf.gather(tf.cast(bank_labels, tf.int32), index)
    rows = tf.range(tf.shape(queries)[0])[:, None]
    segments = rows * num_classes + labels  # one segment per (query, class)
    sums = tf.math.unsorted_segment_sum(tf.reshape(weights, [-1]), tf.reshape(segments, [-1]),
                                        tf.shape(queries)[0] * num_classes)
    return tf.reshape(sums, [-1, num_classes])


def bank_split(source: sources.Source, split: str, size: int, seed: int):
    """(source, split) of the bank: at most ``size`` examples of ``split`` (0: all of it).

    An in-memory source (arrays, the built-in set, an image folder) keeps a seeded random
    subset; a TFDS split its first ``size`` examples (TFDS shuffles the examples when it
    prepares a dataset, so a prefix is a random sample of it)."""
    total = source.known_num_examples(split)
    if not size or (total is not None and total <= size):
        return source, split
    if isinstance(source, sources.InMemorySource):
        keep = np.sort(np.random.default_rng(seed).choice(total, size, replace=False))
        return source.restricted(split, keep), split
    parts = sources.parse_split(split)
    if len(parts) == 1 and parts[0].start is None and parts[0].stop is None:
        return source, f"{split}[:{size}]"
    print(f"kNN monitor: the bank is all of split {split!r} (a slice or a sum is not "
          f"cut to --knn_bank_size={size}).", flush=True)
    return source, split


class KnnMonitor(orbit.AbstractEvaluator):
    """``evaluate(num_steps)`` -> {"knn_top1": ...}: the weighted kNN top-1 on the query
    batches (``num_steps`` of them, -1 for all) against a bank embedded anew each time.

    Args:
      strategy: the run's strategy.
      model: called as ``model(images, training=False)``, gives ``final_avg_pool``.
      bank_ds, query_ds: distributed datasets of (images, labels) batches in eval mode.
      num_classes: C.
      batch_size: the global batch of both datasets (each replica's is padded to its share).
      k, temperature: the vote (``weighted_knn_scores``).
    """

    at_start = True  # the curve starts from the initial weights

    def __init__(self, strategy: tf.distribute.Strategy, model, bank_ds, query_ds,
                 num_classes: int, batch_size: int, k: int = 200, temperature: float = 0.1):
        self.strategy, self.model = strategy, model
        self.bank_ds, self.query_ds = bank_ds, query_ds
        self.num_classes, self.k, self.temperature = num_classes, k, temperature
        self.replica_batch = batch_size // strategy.num_replicas_in_sync
        # One trace for the full batches, one more that generalises the last (partial) one.
        self._embed = tf.function(self._embed_step, reduce_retracing=True)
        self._classify = tf.function(self._classify_step, reduce_retracing=True)
        self.seconds, self.bank_size, self.queries = 0.0, 0, 0  # of the last evaluation

    def _features(self, images, labels):
        """The padded batch's normalised features [b, d] and labels [b] (-1: padding)."""
        pad = self.replica_batch - tf.shape(images)[0]
        images = tf.pad(images, [[0, pad], [0, 0], [0, 0], [0, 0]])
        labels = tf.pad(tf.cast(labels, tf.int32), [[0, pad]], constant_values=NO_LABEL)
        features = self.model(images, training=False)[ep.FINAL_AVG_POOL]
        features = tf.math.l2_normalize(tf.cast(features, tf.float32), axis=-1)
        return (tf.ensure_shape(features, [self.replica_batch, None]),
                tf.ensure_shape(labels, [self.replica_batch]))

    def _embed_step(self, batch):
        def replica_fn(images, labels):
            features, labels = self._features(images, labels)
            context = tf.distribute.get_replica_context()
            return context.all_gather(features, axis=0), context.all_gather(labels, axis=0)
        features, labels = self.strategy.run(replica_fn, args=batch)
        local = self.strategy.experimental_local_results
        return local(features)[0], local(labels)[0]  # every replica holds the whole batch

    def _classify_step(self, batch, bank, bank_labels):
        def replica_fn(images, labels):
            features, labels = self._features(images, labels)
            scores = weighted_knn_scores(features, bank, bank_labels, self.num_classes,
                                         self.k, self.temperature)
            counted = labels != NO_LABEL
            hit = tf.logical_and(counted, tf.argmax(scores, -1, output_type=tf.int32) == labels)
            return (tf.reduce_sum(tf.cast(hit, tf.float32)),
                    tf.reduce_sum(tf.cast(counted, tf.float32)))
        hits, counted = self.strategy.run(replica_fn, args=batch)
        total = tf.distribute.ReduceOp.SUM
        return (self.strategy.reduce(total, hits, axis=None),
                self.strategy.reduce(total, counted, axis=None))

    def note(self) -> str:
        """The last evaluation's size and time, for the eval line."""
        return (f"kNN: {self.bank_size} bank images, {self.queries} queries, "
                f"{self.seconds:.1f} s")

    def embed_bank(self):
        """(features [n, d], labels [n]) of the whole bank, padding rows dropped."""
        features, labels = [], []
        for batch in self.bank_ds:
            f, lb = self._embed(batch)
            features.append(f.numpy())
            labels.append(lb.numpy())
        features, labels = np.concatenate(features), np.concatenate(labels)
        kept = labels != NO_LABEL
        return tf.constant(features[kept]), tf.constant(labels[kept])

    def evaluate(self, num_steps: tf.Tensor) -> Dict[str, float]:
        start = time.perf_counter()
        bank, bank_labels = self.embed_bank()
        steps = int(num_steps)
        hits = counted = 0.0
        for i, batch in enumerate(self.query_ds):
            if 0 <= steps <= i:
                break
            h, c = self._classify(batch, bank, bank_labels)
            hits, counted = hits + float(h), counted + float(c)
        self.seconds = time.perf_counter() - start
        self.bank_size, self.queries = int(bank.shape[0]), int(counted)
        return {"knn_top1": hits / max(counted, 1.0)}
