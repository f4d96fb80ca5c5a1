"""An export used from a Keras 3 program (simclr_tf_keras3.py), in a process of its own:
TF_USE_LEGACY_KERAS unset, ``import keras`` is Keras 3, simclr_tf never imported."""

import json
import os
import subprocess
import sys

import numpy as np
from conftest import built_tiny_model

import simclr_tf  # noqa: F401
from simclr_tf.runs import export as export_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Runs in the Keras 3 process: features of both layers, then fine-tuning with Adam (the
# encoder trainable, batch norm on batch statistics) and a frozen encoder's head.
CLIENT = r"""
import json, os, sys
import numpy as np, tensorflow as tf, keras
from simclr_tf_keras3 import SimCLRExport
path, images = sys.argv[1], np.load(sys.argv[2])
labels = np.arange(len(images)) % 3
report = {"keras": keras.__version__, "legacy": "tf_keras" in sys.modules,
          "simclr_tf": "simclr_tf" in sys.modules}
tfsm = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
report["tfsm_keys"] = sorted(tfsm(images).keys())
report["tfsm"] = tfsm(images)["final_avg_pool"].numpy().tolist()

def fit(trainable):
    keras.utils.set_random_seed(0)
    encoder = SimCLRExport(path, trainable=trainable)
    model = keras.Sequential([keras.Input(images.shape[1:]), encoder, keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [v.numpy().copy() for v in encoder.weights]
    features = encoder(images).numpy()
    history = model.fit(images, labels, batch_size=8, epochs=8, verbose=0)
    moved = [bool(np.any(b != v.numpy())) for b, v in zip(before, encoder.weights)]
    return {"features": features.tolist(), "loss": history.history["loss"],
            "trainable": [v.trainable for v in encoder.weights], "moved": moved,
            "names": [v.name for v in encoder.weights]}

report["finetuned"], report["frozen"] = fit(True), fit(False)
module = tf.Module()
module.f = tf.function(lambda x: {"out": x * 2.0}, input_signature=[tf.TensorSpec([None])])
tf.saved_model.save(module, sys.argv[3], signatures=module.f)
report["refused"] = []
for args in ((sys.argv[3],), (path, "block_group9")):
    try:
        SimCLRExport(*args)
    except ValueError as e:
        report["refused"].append(str(e))
print(json.dumps(report))
"""


def test_a_keras_3_program_fine_tunes_an_export_with_adam(tmp_path):
    model = built_tiny_model()
    path = export_lib.export_model(model, str(tmp_path / "export"))
    images = np.random.default_rng(0).uniform(size=[16, 16, 16, 3]).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.run([sys.executable, "-c", CLIENT, path, str(tmp_path / "images.npy"),
                           str(tmp_path / "foreign")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["keras"].startswith("3.") and not report["legacy"]
    assert not report["simclr_tf"]
    want = model(images, training=False)["final_avg_pool"].numpy()
    assert "final_avg_pool" in report["tfsm_keys"] and "proj_head_output" in report["tfsm_keys"]
    for got in (report["tfsm"], report["finetuned"]["features"], report["frozen"]["features"]):
        np.testing.assert_allclose(np.array(got), want, rtol=1e-5, atol=1e-5)
    tuned = report["finetuned"]
    assert not any(":" in name for name in tuned["names"])
    assert tuned["loss"][-1] < tuned["loss"][0]
    # What trains moves (the encoder; the projection head gets no gradient from this loss)
    # and so do batch norm's moving statistics (fit runs it on batch statistics).
    encoder_kernels = [m for n, t, m in zip(tuned["names"], tuned["trainable"], tuned["moved"])
                       if t and "resnet" in n and n.endswith("kernel")]
    assert encoder_kernels and all(encoder_kernels)
    assert any(m for n, m in zip(tuned["names"], tuned["moved"]) if "moving_mean" in n)
    frozen = report["frozen"]
    assert not any(frozen["moved"]), [n for n, m in zip(frozen["names"], frozen["moved"]) if m]
    assert frozen["loss"][-1] < frozen["loss"][0]
    # Another program's SavedModel, or an endpoint the export lacks: one line saying so.
    foreign, endpoint = report["refused"]
    assert foreign == (f"{str(tmp_path / 'foreign')!r} is a SavedModel of another program, not "
                       "an export of simclr_tf: its serving_default returns out.")
    assert endpoint.startswith(f"endpoint='block_group9' is not an endpoint of {path!r}: it "
                               "has block_group1, block_group2,"), endpoint
