"""A model from what a user points at: an export (a folder with saved_model.pb), a run folder
(its newest checkpoint, else its newest export) or a checkpoint prefix.

Every program that reads a trained model takes it from here (``simclr-visualize``,
``simclr-transfer``, ``simclr-distill``'s teacher): ``load`` when any of the three will do,
``from_export`` / ``from_checkpoint`` when the program already knows which. Build under a
strategy's scope to have the model on every replica.
"""

import dataclasses
from typing import Dict, Optional

import tensorflow as tf

from simclr_tf.core import config as config_lib
from simclr_tf.models import saved_files
from simclr_tf.runs import checkpoints
from simclr_tf.runs import export as export_lib
from simclr_tf.runs import run_folder


@dataclasses.dataclass
class LoadedModel:
    """A trained model, called in inference mode: ``endpoints(images)`` (float images
    [B, H, W, 3] in [0, 1]) gives the export's dict of named tensors."""

    holder: object  # the loaded SavedModel or Keras model: it owns the variables
    num_classes: Optional[int]  # the supervised head's classes; None without one
    settings: Optional[config_lib.Config]  # the run's settings, when its flags.txt is known
    description: str  # "export PATH" or "checkpoint PREFIX", for the programs' lines

    def endpoints(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
        return self.holder(images, training=False)


def _run_settings(path: str) -> Optional[config_lib.Config]:
    flagfile = run_folder.settings_file(path)
    return run_folder.read_settings(flagfile) if flagfile else None


def from_export(path: str, flag: str = "--hub_module") -> LoadedModel:
    """The export at ``path`` (given as ``flag``, named in errors), with its run's settings
    when it sits in a run folder. Another program's SavedModel, or a damaged export, is
    refused in one line (``saved_files.export_outputs``)."""
    outputs = saved_files.export_outputs(path, flag)
    with saved_files.reading(path, f"{flag}={path!r}"):
        module = tf.saved_model.load(path)
    return LoadedModel(module, saved_files.num_classes(outputs), _run_settings(path),
                       f"export {path}")


def from_checkpoint(path: str, settings: config_lib.Config) -> LoadedModel:
    """The checkpoint at ``path`` (a prefix or a run folder: its newest) of a run of
    ``settings``, supervised head included when it has one."""
    prefix = checkpoints.resolve(path)
    model = export_lib.checkpoint_model(settings, prefix)
    model.trainable = False
    return LoadedModel(model, checkpoints.num_classes_in(prefix), settings,
                       f"checkpoint {prefix}")


def load(path: str, flag: str) -> LoadedModel:
    """An export, a run folder or a checkpoint prefix given as ``flag`` (named in errors)."""
    prefix = bool(path) and tf.io.gfile.exists(path + ".index")
    if not path or not (prefix or tf.io.gfile.exists(path)):
        raise ValueError(f"{flag}={path!r} does not exist; give an export (a folder with "
                         "saved_model.pb), the folder of a run, or a checkpoint.")
    if export_lib.holds_savedmodel(path):
        return from_export(path, flag)
    if prefix or (tf.io.gfile.isdir(path) and tf.train.latest_checkpoint(path)):
        settings = _run_settings(path)
        if settings is None:
            raise ValueError(f"{flag}={path!r}: a checkpoint without its run's flags.txt "
                             "(which says its architecture); give the run's folder or an "
                             "export of it.")
        return from_checkpoint(path, settings)
    exports = export_lib.list_exports(path) if tf.io.gfile.isdir(path) else []
    if exports:
        return from_export(exports[-1], flag)
    raise ValueError(f"{flag}={path!r} holds no export (saved_model.pb) and no checkpoint.")
