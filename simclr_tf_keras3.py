"""An export of simclr_tf as a Keras 3 layer, for programs that use Keras 3 (TF >= 2.16's
default ``keras``).

Keras 3 reads a SavedModel with ``keras.layers.TFSMLayer(path, call_endpoint=
"serving_default")``: that gives every endpoint and trains a new head on a frozen encoder
with any optimizer. Fine-tuning the encoder through it stops at the first optimizer that keeps
a slot per variable (Adam, RMSprop, SGD with momentum): TFSMLayer names its Keras variables
after the SavedModel's TensorFlow variables, whose names end in ``:0``, and Keras 3 turns a
variable's name into the name scope of its slots, where ``:`` is not allowed. Every
TensorFlow variable's name ends in ``:0``, so no export can avoid it; this layer names the
same variables without it.

It is a module of its own, apart from the ``simclr_tf`` package: importing ``simclr_tf``
selects Keras 2 for ``tf.keras`` (``TF_USE_LEGACY_KERAS``), which a Keras 3 program must not
get. Here nothing but TensorFlow and Keras 3 is imported.

    import keras
    from simclr_tf_keras3 import SimCLRExport

    encoder = SimCLRExport(path)                     # trainable=False: a frozen encoder
    model = keras.Sequential([keras.Input([32, 32, 3]), encoder, keras.layers.Dense(10)])
    model.compile(optimizer="adam", ...)
"""

import keras
import tensorflow as tf


class SimCLRExport(keras.layers.Layer):
    """A SavedModel written by simclr_tf (``model_dir/saved_model/<step>``, ``simclr-export``)
    as a Keras 3 layer.

    Called on float images [B, H, W, 3] in [0, 1], it returns the export's ``endpoint``
    (default ``final_avg_pool`` [B, C]), or the dict of every endpoint with
    ``endpoint=None``. Its trainable variables are the export's ``trainable_variables`` (the
    encoder and the heads, not batch norm's moving statistics); with ``trainable=True``, a
    call with ``training=True`` (Keras's ``fit``) runs batch norm on the batch's statistics
    and updates the moving ones, as in simclr_tf's fine-tuning; otherwise batch norm uses
    its moving statistics. The variables are the export's own, not copies.
    """

    def __init__(self, path: str, endpoint: str = "final_avg_pool", trainable: bool = True,
                 **kwargs):
        super().__init__(**kwargs)
        # (``path`` and ``output`` are read-only properties of a Keras 3 layer.)
        self.export_path, self.endpoint = str(path), endpoint
        self._export = tf.saved_model.load(self.export_path)
        serving = getattr(self._export, "signatures", {}).get("serving_default")
        outputs = sorted(serving.structured_outputs) if serving is not None else []
        if not hasattr(self._export, "serve") or "final_avg_pool" not in outputs:
            raise ValueError(f"{self.export_path!r} is a SavedModel of another program, not an "
                             f"export of simclr_tf: its serving_default returns "
                             f"{', '.join(outputs) or 'nothing'}.")
        if endpoint is not None and endpoint not in outputs:
            raise ValueError(f"endpoint={endpoint!r} is not an endpoint of {self.export_path!r}"
                             f": it has {', '.join(outputs)} (or None for all of them).")
        trainable_ids = {id(v) for v in self._export.trainable_variables}
        self.export_variables = [
            keras.Variable(v, name=v.name.split(":")[0].replace("/", "_"),
                           trainable=id(v) in trainable_ids)
            for v in self._export.variables]
        self.trainable = trainable  # after the variables: Keras passes it on to them

    def call(self, images, training=False):
        outputs = self._export(images, training=bool(training) and self.trainable)
        return dict(outputs) if self.endpoint is None else outputs[self.endpoint]

    def get_config(self):
        return {**super().get_config(), "path": self.export_path, "endpoint": self.endpoint}
