"""simclr-ablate: one of the paper's studies, each cell pretrained and linear-evaluated.

  simclr-ablate --study=color_strength --flagfile=flags/demo.flags --model_dir=DIR
  simclr-ablate --study=loss --flagfile=flags/demo.flags --budget_minutes=15 --model_dir=DIR

Every cell is an ordinary pair of runs in ``DIR/<cell>/{pretrain,linear}`` (a supervised
cell: one run in ``DIR/<cell>/supervised``) with its flags.txt, on top of the flags given (a
flagfile sizes the runs, or --budget_minutes does); an interrupted study continues where it
stopped and never re-runs a finished run. A resumed study keeps the flags it began with
(DIR/study.json): other flags are refused, naming each that differs. ``DIR/ablation.md`` has
each cell's top-1 and kNN top-1 beside the paper's figure, ``DIR/ablation.png`` its chart.
Studies: color_strength, augmentation_pairs, projection_head, temperature, loss, batch_size
(docs/ablations.md).
"""

import os

from absl import flags

from simclr_tf.cli import flags as cli_flags

cli_flags.define_flags(train_mode="pretrain")
STUDY = flags.DEFINE_string(
    "study", None, "The study to run: color_strength, augmentation_pairs, projection_head, "
    "temperature, loss or batch_size.")
CELLS = flags.DEFINE_string(
    "cells", "", "Run only these cells of the study (their names, comma-separated, as "
    "DIR/<cell> and ablation.md name them); empty: every cell.")
BUDGET = flags.DEFINE_float(
    "budget_minutes", 0.0, "Fit the whole study into this many minutes: probe runs measure "
    "this machine, then every cell pretrains for the steps that fit (kept in "
    "DIR/budget.json for a resumed study); at most 43200 (30 days). 0: the flags' "
    "--train_steps / --train_epochs.",
    lower_bound=0.0)
LINEAR_STEPS = flags.DEFINE_integer(
    "linear_eval_steps", 200, "Training steps of each cell's linear evaluation.",
    lower_bound=1)
LINEAR_LR = flags.DEFINE_float(
    "linear_eval_learning_rate", 0.2, "Base learning rate of the linear evaluations "
    "(Nesterov momentum, linear scaling, no warm-up, no weight decay).")
LINEAR_BATCH = flags.DEFINE_integer(
    "linear_eval_batch_size", 256, "Global batch of the linear evaluations.", lower_bound=1)
EXTRA = ("study", "cells", "budget_minutes", "linear_eval_steps", "linear_eval_learning_rate",
         "linear_eval_batch_size")


def _write_flags(cfg):
    from simclr_tf.runs import run_folder  # noqa: PLC0415 (late: keep --help fast)

    run_folder.write_settings(cfg, os.path.join(cfg.model_dir, run_folder.SETTINGS_FILE))


def main(cfg, explicit):
    del explicit
    from simclr_tf.tools import ablation_studies  # late: keep --help and flag errors fast

    study = ablation_studies.get(STUDY.value, CELLS.value)
    from simclr_tf.tools import ablation  # noqa: PLC0415 (TensorFlow: after the checks)

    if not cfg.model_dir:
        raise ValueError("--model_dir is required: the study's folder.")
    linear = ablation.LinearSettings(LINEAR_STEPS.value, LINEAR_LR.value, LINEAR_BATCH.value)
    ablation.run(study, cfg, linear, before_run=_write_flags,
                 budget_minutes=BUDGET.value or None)


def run():
    cli_flags.run_program(main, "simclr-ablate", __doc__, extra=EXTRA)


if __name__ == "__main__":
    run()
