"""``simclr-bench --parts=chunks``: the pretraining step against ``--embedding_chunks``.

For the configured encoder, image size and batch, and each K of ``options.chunk_counts``
that divides a replica's share of the batch: the step's time (median of timed runs) and the
allocator's peak memory during its measurement (the model, its optimizer slots and
gradients included, as the loss-scaling part measures it), on the first device: the
figures of one replica. Their ratios to K = 1 are the price of the second forward pass and
what the chunks save; ``activation_mib_per_image`` is the memory of one image's two views'
activations, from the fall of the peak between K = 1 and the largest K:
peak(K) ~ fixed + images x activation / K.
"""

import dataclasses
from typing import Callable, Dict, List

from simclr_tf.bench import loss_scaling


def run(cfg, strategy, options, report: Callable[[str], None],
        measure_step: Callable) -> Dict[str, float]:
    """The figures of the module doc, keyed ``chunks_K_ms``, ``chunks_K_peak_mib`` and their
    ratios to K = 1 (``chunks_K_time_ratio``, ``chunks_K_memory_ratio``)."""
    replica_batch = cfg.train_batch_size // strategy.num_replicas_in_sync
    counts = [k for k in options.chunk_counts if replica_batch % k == 0]
    if 1 not in counts:
        counts = [1] + counts
    result: Dict[str, float] = {"chunks_replica_batch": replica_batch}
    one_run = dataclasses.replace(options, steps_per_run=1)
    for k in counts:
        report(f"measuring the step with --embedding_chunks={k} ({replica_batch // k} "
               "images per chunk) ...")
        figures: Dict[str, float] = {}
        step_cfg = dataclasses.replace(cfg, embedding_chunks=k)
        result[f"chunks_{k}_peak_mib"] = loss_scaling.peak_mib(
            lambda: figures.update(measure_step(step_cfg, strategy, one_run)))
        result[f"chunks_{k}_ms"] = 1e3 * figures["train_step_seconds"]
    for k in counts:
        result[f"chunks_{k}_time_ratio"] = result[f"chunks_{k}_ms"] / result["chunks_1_ms"]
        result[f"chunks_{k}_memory_ratio"] = (result[f"chunks_{k}_peak_mib"]
                                              / result["chunks_1_peak_mib"])
    most = max(counts)
    if most > 1:
        fall = result["chunks_1_peak_mib"] - result[f"chunks_{most}_peak_mib"]
        result["activation_mib_per_image"] = fall / (replica_batch * (1 - 1 / most))
    return result


def format_rows(result: Dict[str, float]) -> List[str]:
    """Table lines for the figures ``run`` returned (none when it did not run)."""
    counts = sorted(int(k.split("_")[1]) for k in result
                    if k.startswith("chunks_") and k.endswith("_peak_mib"))
    if not counts:
        return []
    lines = [f"--embedding_chunks K at {int(result['chunks_replica_batch'])} images per "
             "replica (peak: the allocator's, model included):",
             f"  {'K':>3} {'step ms':>10} {'x K=1':>6} {'peak MiB':>10} {'x K=1':>6}"]
    for k in counts:
        lines.append(f"  {k:>3} {result[f'chunks_{k}_ms']:>10.1f} "
                     f"{result[f'chunks_{k}_time_ratio']:>6.2f} "
                     f"{result[f'chunks_{k}_peak_mib']:>10.1f} "
                     f"{result[f'chunks_{k}_memory_ratio']:>6.2f}")
    if "activation_mib_per_image" in result:
        lines.append(f"  activations: {result['activation_mib_per_image']:.2f} MiB per image "
                     "(two views, forward and backward)")
    return lines
