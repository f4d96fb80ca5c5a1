"""The demo behind ``make demo``: SimCLR beats a random encoder on the built-in dataset.

  python -m simclr_tf.cli.demo --flagfile=flags/demo.flags --model_dir=demo_runs

Three runs of the library's own programs, in ``model_dir/{pretrain,linear_eval,random_init}``:
contrastive pretraining on the built-in ``shapes`` set (no labels used by the encoder), then
the paper's linear evaluation (frozen encoder, batch norm in inference mode, a linear head
trained on crop + flip) of that encoder and of the same architecture at random
initialisation. It ends with one line:

  demo: pretrained top-1 = 0.xxx, random-init top-1 = 0.yyy; pictures in DIR: views.png ...

Every run resumes from its checkpoints, so an interrupted demo continues where it stopped.
"""

import os

from absl import flags

from simclr_tf.cli import flags as cli_flags

cli_flags.define_flags(train_mode="pretrain")
LINEAR_STEPS = flags.DEFINE_integer(
    "linear_eval_steps", 200, "Training steps of each linear evaluation.")
LINEAR_LR = flags.DEFINE_float(
    "linear_eval_learning_rate", 0.2, "Base learning rate of the linear evaluations "
    "(Nesterov momentum, linear scaling, no warm-up, no weight decay).")
LINEAR_BATCH = flags.DEFINE_integer(
    "linear_eval_batch_size", 256, "Global batch of the linear evaluations.")


def _write_flags(cfg):
    from simclr_tf.runs import run_folder  # noqa: PLC0415 (late: keep --help fast)

    run_folder.write_settings(cfg, os.path.join(cfg.model_dir, run_folder.SETTINGS_FILE))


def main(cfg, explicit):
    del explicit
    from simclr_tf.tools import demo  # late: keep --help and flag errors fast

    demo.run(cfg, LINEAR_STEPS.value, LINEAR_LR.value, LINEAR_BATCH.value,
             before_run=_write_flags)


def run():
    cli_flags.run_program(main, "simclr-demo", __doc__,
                          extra=("linear_eval_steps", "linear_eval_learning_rate",
                                 "linear_eval_batch_size"))


if __name__ == "__main__":
    run()
