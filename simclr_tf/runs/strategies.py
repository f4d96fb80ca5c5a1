"""Choosing a tf.distribute strategy from ``--strategy`` (and ``--tpu_name``)."""

import json
import os
from typing import Optional

import tensorflow as tf

from simclr_tf.core import choices


def _tf_config() -> dict:
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e}): {raw[:200]!r}") from e


def _num_workers_in_tf_config() -> int:
    cluster = _tf_config().get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def num_workers() -> int:
    """How many worker processes TF_CONFIG lists (1 without TF_CONFIG)."""
    return max(1, _num_workers_in_tf_config())


def is_chief() -> bool:
    """Whether this process writes checkpoints, summaries and exports (TF_CONFIG's chief).

    The chief is the ``chief`` task, or worker 0 when the cluster has no chief; a process
    without TF_CONFIG is its own chief.
    """
    config = _tf_config()
    if not config:
        return True
    task = config.get("task", {})
    kind, index = task.get("type"), int(task.get("index", 0))
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and "chief" not in config.get("cluster", {})


def resolve_name(name: str, tpu: Optional[str] = None) -> str:
    """What ``auto`` means on this machine; other names are returned unchanged."""
    if name != "auto":
        return name
    if tpu:
        return "tpu"
    if _num_workers_in_tf_config() > 1:
        return "multi_worker"
    if tf.config.list_physical_devices("GPU"):
        return "mirrored"
    return "default"


def from_config(cfg) -> tf.distribute.Strategy:
    """The strategy of a ``config.Config`` (``--strategy`` and the TPU flags)."""
    return get_strategy(cfg.strategy_name, cfg.tpu_name, zone=cfg.tpu_zone,
                        project=cfg.gcp_project, master=cfg.master)


def get_strategy(name: str = "auto", tpu: Optional[str] = None, zone: Optional[str] = None,
                 project: Optional[str] = None, master: Optional[str] = None
                 ) -> tf.distribute.Strategy:
    """The strategy for ``name``.

    Args:
      name: ``default`` (one device, no distribution), ``mirrored`` (every local GPU, else the
        CPU), ``multi_worker`` (MultiWorkerMirroredStrategy configured by ``TF_CONFIG``),
        ``tpu`` (TPUStrategy on ``tpu``), or ``auto``: a TPU when ``tpu`` is given, several
        workers when ``TF_CONFIG`` lists them, all local GPUs when there are any, else
        ``default``.
      tpu: the TPU name or address (``local`` on a TPU VM).
      zone, project: the TPU's GCE zone and GCP project (the TPU cluster resolver's).
      master: the TPU master address, used when ``tpu`` is not given (the original's
        ``--master``).

    Raises:
      ValueError: an unknown name, or a strategy this machine cannot provide.
    """
    choices.check_choice("strategy", name, choices.STRATEGIES)
    name = resolve_name(name, tpu or master)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if _num_workers_in_tf_config() < 1:
            raise ValueError("--strategy=multi_worker needs TF_CONFIG describing the cluster "
                             "(see docs/scaling.md).")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        choices.check_tpu_address(name, tpu, master)
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
                tpu=tpu or master, zone=zone, project=project)
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, OSError, tf.errors.OpError, RuntimeError) as e:
            raise ValueError(f"--strategy=tpu: cannot reach TPU {tpu or master!r} from this "
                             f"machine ({type(e).__name__}: {str(e)[:200]}). Use "
                             "--strategy=auto or default to run on the CPU/GPUs here.") from e
        return tf.distribute.TPUStrategy(resolver)
    raise AssertionError(f"--strategy={name!r} is accepted but not built here.")
