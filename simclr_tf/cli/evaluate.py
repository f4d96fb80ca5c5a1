"""simclr-eval: a run's evaluators (top-1 / top-5 of its head, ...) on its checkpoint.

  simclr-eval --model_dir=RUN [--checkpoint=RUN/ckpt-N] [--eval_split=test]

It evaluates the newest checkpoint of the run in --model_dir, with the run's own settings
(RUN/flags.txt; flags on the command line take precedence), or the checkpoint given by
--checkpoint on the command line, with what --evaluators names (probe: top-1 / top-5 of the
supervised head; knn when the run pretrained; ...), printing whatever they report.
"""

from simclr_tf.cli import _common
from simclr_tf.cli import flags as cli_flags

cli_flags.define_flags(train_mode="finetune")


def main(cfg, explicit):
    from simclr_tf.evaluation import supervised  # late: keep --help and flag errors fast

    supervised.evaluate(cfg, _common.run_checkpoint(cfg, explicit))


def run():
    cli_flags.run_program(main, "simclr-eval", __doc__, reads_run=True)


if __name__ == "__main__":
    run()
