"""Hub-style SavedModel export of a SimCLR model, written atomically.

The SavedModel is called as ``module(images, training=False)`` (also ``trainable=``, the
original's spelling) on float images [B, H, W, 3] in [0, 1] and returns a dict of the named
endpoints (``endpoints.py``): the stem, each block group, ``final_avg_pool``,
``proj_head_input``, ``proj_head_output`` and ``logits_sup`` when there is a supervised head.
``training=True`` runs batch norm on batch statistics and updates its moving averages.

It follows the reusable-SavedModel convention, so ``hub.KerasLayer(path, trainable=True)``
fine-tunes it: the root carries ``variables``, ``trainable_variables`` and
``regularization_losses``. A ``serving_default`` signature (inference mode) exists for
serving tools. No augmentation runs inside the export.
"""

import contextlib
import dataclasses
import os
import re
import time
from typing import List

import tensorflow as tf

from simclr_tf.core import endpoints as ep
from simclr_tf.models import saved_files
from simclr_tf.models import simclr_model as model_lib
from simclr_tf.models.kernels import convs
from simclr_tf.runs import checkpoints

EXPORTS_SUBDIR = "saved_model"
# Any channel count in the signature, so that a wrong one gets our message, not a list of
# signatures that did not match.
_IMAGES = tf.TensorSpec([None, None, None, None], tf.float32, name="images")


class _Exportable(tf.__internal__.tracking.AutoTrackable):
    """The SavedModel's root: the model's call in both modes plus the variable lists."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.variables = list(model.variables)
        self.trainable_variables = list(model.trainable_variables)
        self.regularization_losses = []

        @tf.function
        def call(images, training=False, trainable=None):
            mode = training if trainable is None else trainable
            images = tf.convert_to_tensor(images, tf.float32)
            # Fails when called with another channel count, naming both shapes and this node.
            images = tf.ensure_shape(images, [None, None, None, 3],
                                     name="images_must_be_float_RGB_batch_height_width_3")
            outputs = model(images, training=mode, return_endpoints=True)
            return {k: tf.identity(v, name=k) for k, v in outputs.items()}

        for mode in (False, True):
            call.get_concrete_function(_IMAGES, training=mode)
            call.get_concrete_function(_IMAGES, trainable=mode)
        self.__call__ = call

        @tf.function(input_signature=[_IMAGES])
        def serve(images):
            return call(images, training=False)

        self.serve = serve


def _without_keras_traces():
    """Keras 2 adds to a SavedModel a trace of every layer's call (for
    ``tf_keras.models.load_model``); the export is read with ``tf.saved_model.load`` and
    ``hub.KerasLayer``, which use the root's functions only, so the traces are left out: they
    cost most of an export's time (docs/performance.md)."""
    try:
        from tf_keras.src.saving.legacy.saved_model import utils  # noqa: PLC0415
    except ImportError:  # another tf-keras layout: the export only takes longer
        return contextlib.nullcontext()
    return utils.keras_option_scope(save_traces=False, in_tf_saved_model_scope=False)


def export_model(model, export_dir: str) -> str:
    """Writes ``model`` (a built ``SimCLRModel``) as a SavedModel at ``export_dir``.

    The SavedModel is written next to ``export_dir`` and renamed into place, so a half-written
    export never looks complete; an existing export of this project at ``export_dir`` is
    replaced, anything else there is refused (``check_target``).
    """
    export_dir = export_dir.rstrip("/")
    check_target(export_dir)
    parent = os.path.dirname(export_dir) or "."
    tf.io.gfile.makedirs(parent)
    tmp = os.path.join(parent, f".tmp-{os.path.basename(export_dir)}-{os.getpid()}")
    if tf.io.gfile.exists(tmp):
        tf.io.gfile.rmtree(tmp)
    with convs.tf_kernels(model):  # no CPU-only formulation in a graph for anywhere
        root = _Exportable(model)
        with _without_keras_traces():
            tf.saved_model.save(root, tmp, signatures={"serving_default": root.serve})
    if tf.io.gfile.exists(export_dir):
        old = f"{tmp}-old-{int(time.time())}"
        tf.io.gfile.rename(export_dir, old)
        tf.io.gfile.rename(tmp, export_dir)
        tf.io.gfile.rmtree(old)
    else:
        tf.io.gfile.rename(tmp, export_dir)
    return export_dir


def holds_savedmodel(path: str) -> bool:
    """``path`` is a folder holding a SavedModel (``saved_model.pb``) of any program."""
    return tf.io.gfile.exists(os.path.join(path, "saved_model.pb"))


def saved_object_graph(path: str):
    """The objects of the SavedModel at ``path`` (``saved_model.pb``'s object graph: nodes
    with their kinds, names and children); ValueError naming the file when it cannot be
    read."""
    return saved_files.savedmodel_graph(path).object_graph_def.nodes


def is_export(path: str) -> bool:
    """Whether ``path`` holds a SavedModel that ``export_model`` wrote (its root holds the
    model and the ``serve`` function)."""
    if not holds_savedmodel(path):
        return False
    try:
        root = saved_object_graph(path)[0]
    except ValueError:  # unreadable: not ours to replace
        return False
    return set(saved_files.EXPORT_ROOT) <= {c.local_name for c in root.children}


def check_target(export_dir: str, flag: str = ""):
    """Raises ValueError, in one line, unless ``export_dir`` (given as ``--flag``) is new, an
    empty folder or an export of this project: a user's file or folder is never replaced."""
    if not tf.io.gfile.exists(export_dir):
        return
    named = f"--{flag}={export_dir!r}" if flag else repr(export_dir)
    if not tf.io.gfile.isdir(export_dir):
        raise ValueError(f"{named} is a file; an export is a folder: give a new or empty "
                         "folder (the file is left as it is).")
    entries = sorted(e.rstrip("/") for e in tf.io.gfile.listdir(export_dir))
    if entries and not is_export(export_dir):
        raise ValueError(f"{named} holds {len(entries)} file(s) or folder(s) (e.g. "
                         f"{entries[0]!r}) and is not an export of simclr_tf: give a new or "
                         "empty folder (it is left as it is).")


def remove_partial_exports(model_dir: str) -> int:
    """Cleans what interrupted exports left in ``model_dir/saved_model``: a half-written
    ``.tmp-STEP-PID`` is deleted; a replaced export's ``.tmp-STEP-PID-old-T`` is put back
    when STEP itself is missing (the kill fell between the two renames), else deleted.
    Call it only while holding the run's lock. Returns how many were handled."""
    root = os.path.join(model_dir, EXPORTS_SUBDIR)
    if not tf.io.gfile.isdir(root):
        return 0
    handled = 0
    for name in sorted(n.rstrip("/") for n in tf.io.gfile.listdir(root)):
        match = re.fullmatch(r"\.tmp-(.+?)-\d+(-old-\d+)?", name)
        if not match:
            continue
        path, target = os.path.join(root, name), os.path.join(root, match.group(1))
        if match.group(2) and not tf.io.gfile.exists(target):
            tf.io.gfile.rename(path, target)
        else:
            tf.io.gfile.rmtree(path)
        handled += 1
    return handled


def list_exports(model_dir: str) -> List[str]:
    """The complete exports under ``model_dir/saved_model/<step>``, oldest first."""
    return numbered_savedmodels(os.path.join(model_dir, EXPORTS_SUBDIR))


def numbered_savedmodels(root: str) -> List[str]:
    """The complete SavedModels ``root/<step>`` (holding saved_model.pb), oldest first."""
    if not tf.io.gfile.isdir(root):
        return []
    steps = sorted(int(n.rstrip("/")) for n in tf.io.gfile.listdir(root)
                   if n.rstrip("/").isdigit())
    return [os.path.join(root, str(s)) for s in steps
            if holds_savedmodel(os.path.join(root, str(s)))]


def endpoint_names(with_supervised_head: bool) -> List[str]:
    """The keys of the dict an export returns."""
    names = list(ep.ENCODER_ENDPOINTS) + [ep.PROJ_HEAD_INPUT, ep.PROJ_HEAD_OUTPUT]
    return names + [ep.LOGITS_SUP] if with_supervised_head else names


def export_checkpoint(cfg, checkpoint_path: str, export_dir: str) -> str:
    """Exports the model of a checkpoint (a prefix or a model_dir) of a run of ``cfg`` (a
    ``config.Config``) as a hub-style SavedModel at ``export_dir``.

    The export is always fully trainable (no frozen blocks, per-replica batch norm), whatever
    the run froze; the supervised head is included when the checkpoint has one.
    """
    return export_model(checkpoint_model(cfg, checkpoint_path), export_dir)


def checkpoint_model(cfg, checkpoint_path: str):
    """The whole model of a checkpoint (a prefix or a model_dir) of a run of ``cfg``, built
    fully trainable with per-replica batch norm in float32, its supervised head included
    when the checkpoint has one."""
    prefix = checkpoints.resolve(checkpoint_path)
    model_cfg = dataclasses.replace(cfg, train_mode="distill" if cfg.train_mode == "distill"
                                    else "finetune", linear_eval=False,
                                    fine_tune_after_block=-1, global_bn=False,
                                    precision="float32")
    model = model_lib.from_config(model_cfg, checkpoints.num_classes_in(prefix))
    checkpoints.restore_for_eval(model, prefix)
    return model
