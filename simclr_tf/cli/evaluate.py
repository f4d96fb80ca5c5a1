"""simclr-eval: top-1 / top-5 of a checkpoint on a split.

  simclr-eval --flagfile=RUN/flags.txt [--checkpoint=RUN/ckpt-N] [--eval_split=test]

Without --checkpoint it evaluates the newest checkpoint in --model_dir.
"""

from simclr_tf.cli import flags as cli_flags

cli_flags.define_flags(train_mode="finetune")


def main(cfg):
    from simclr_tf import train  # late: keep --help and flag errors fast

    train.evaluate(cfg, cfg.checkpoint)


def run():
    cli_flags.run_program(main, "simclr-eval")


if __name__ == "__main__":
    run()
