"""A user's own evaluator, without editing the package: a module named by its path
(``--evaluators=my_evaluators.weight_squares``) during pretraining, and an object registered from
a notebook cell in the eval job (``--mode=eval``), each reported by the name it gives."""

import dataclasses
import json
import shutil
import types

import numpy as np
import pytest
import tensorflow as tf

from simclr_tf.core import config as config_lib
from simclr_tf.core import parts
from simclr_tf.evaluation import running, supervised
from simclr_tf.models import simclr_model as model_lib
from simclr_tf.runs import checkpoints
from simclr_tf.tools import visualize
from simclr_tf.training import train

# The sum of the squares of the model's trainable weights, as a user would write it.
OWN_EVALUATOR = '''
import numpy as np


class WeightSquares:
    at_start = True

    def __init__(self, model):
        self.model = model

    def evaluate(self, num_steps):
        return {"weight_squares": float(sum(np.sum(np.square(v.numpy(), dtype=np.float64))
                                            for v in self.model.trainable_variables))}

    def note(self):
        return "summed in NumPy"


def evaluator(run):
    return WeightSquares(run.model)
'''


def _squares(variables):
    return float(sum(np.sum(np.square(v.numpy().astype(np.float64))) for v in variables))


def _weight_squares(model):
    return _squares(model.trainable_variables)


@pytest.fixture
def own_module(user_package):
    user_package("my_evaluators", {"weight_squares": OWN_EVALUATOR,
                                   "not_an_evaluator": "VALUE = 1\n"})
    return "my_evaluators.weight_squares"


def test_pretraining_reports_its_own_evaluator(own_module, tiny, tmp_path, capsys):
    """Named alone, it is all the run evaluates (the probe trains, unreported), at steps 0 and
    2; summary.json, TensorBoard and the eval line hold its figure of the final weights."""
    cfg = tiny(tmp_path / "run", evaluators=own_module, train_steps=2)
    kept = {}
    summary = train.run(cfg, on_end=lambda model: kept.update(model=model))
    want = _weight_squares(kept["model"])
    assert summary["weight_squares"] == pytest.approx(want, rel=1e-9)
    assert "top1" not in summary and "knn_top1" not in summary
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["weight_squares"] == summary["weight_squares"]
    scalars = visualize.read_scalars(str(tmp_path / "run"))["eval/weight_squares"]
    assert set(scalars) == {0, 2} and scalars[2] == pytest.approx(want, rel=1e-6)
    assert scalars[0] != pytest.approx(scalars[2], rel=1e-6)  # the weights moved
    out = capsys.readouterr().out
    assert f"eval at step 2 | weight_squares {want:.3f} (summed in NumPy)" in out


def test_the_eval_job_reports_a_registered_evaluator(trained_run, tmp_path, monkeypatch):
    """--mode=eval over a copy of the shared run, with the probe and an evaluator registered
    from Python: both figures for each checkpoint, in TensorBoard and the result."""
    monkeypatch.setattr(parts, "_REGISTERED", {kind: {} for kind in parts.KINDS})
    seen = []

    class Squares:  # the sum of the squares of the model's variables, as restored
        def __init__(self, run):
            self.run = run

        def evaluate(self, num_steps):
            seen.append(int(num_steps))
            return {"squares": _squares(self.run.model.variables)}

    parts.register("evaluator", "squares", types.SimpleNamespace(evaluator=Squares))
    cfg, summary = trained_run
    shutil.copytree(cfg.model_dir, tmp_path / "run")
    shutil.rmtree(tmp_path / "run" / "eval")
    cfg = dataclasses.replace(cfg, model_dir=str(tmp_path / "run"), evaluators="probe,squares")
    result = supervised.evaluate_checkpoints(cfg, timeout=0, min_interval_secs=0)
    # The run is finished: its newest checkpoint, the last step's, is the one scored.
    assert result["checkpoint"].endswith("ckpt-4") and seen == [1]  # --eval_steps=1
    assert result["top1"] == pytest.approx(summary["top1"])
    assert "knn_top1" not in result and "alignment" not in result  # not chosen here
    model = model_lib.from_config(cfg, checkpoints.num_classes_in(result["checkpoint"]))
    model(tf.zeros([1, cfg.image_size, cfg.image_size, 3]), training=False)
    fresh = _squares(model.variables)  # before the restore: the initial weights' figure
    checkpoints.restore_for_eval(model, result["checkpoint"])
    assert result["squares"] == pytest.approx(_squares(model.variables), rel=1e-9)
    assert result["squares"] != pytest.approx(fresh, rel=1e-4)  # the checkpoint's, not these
    scalars = visualize.read_scalars(str(tmp_path / "run"))
    assert set(scalars["eval/squares"]) == set(scalars["eval/top1"]) == {4}
    assert scalars["eval/squares"][4] == pytest.approx(result["squares"], rel=1e-6)


def test_two_evaluators_of_one_name_are_refused(monkeypatch):
    class Same:
        def evaluate(self, num_steps):
            return {"top1": 0.5}

    with pytest.raises(ValueError, match="two evaluators report 'top1'"):
        running.evaluate_all([Same(), Same()], tf.constant(-1))


def test_bad_names_are_refused_in_one_line(own_module):
    cases = {"probe,my_evaluators.not_an_evaluator":
             r"--evaluators='my_evaluators\.not_an_evaluator': .* defines no evaluator\(\) "
             "function",
             "probe,knnn": r"--evaluators='knnn' is not supported; use one of probe, knn",
             "probe,knn,probe": r"--evaluators='probe,knn,probe' names probe twice"}
    for names, message in cases.items():
        with pytest.raises(ValueError, match=message) as info:
            config_lib.Config(model_dir="unused", evaluators=names).validate()
        assert "\n" not in str(info.value)
    assert config_lib.Config(model_dir="unused", evaluators=" probe , knn ").validate()
