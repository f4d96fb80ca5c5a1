"""What every training program does around ``train.run``."""

import os

from simclr_tf.cli import flags as cli_flags


def train_main(train_mode: str, prog: str):
    """The main() of simclr-pretrain / simclr-finetune."""

    def main(cfg):
        if cfg.train_mode != train_mode:
            raise ValueError(f"{prog} runs --train_mode={train_mode}; got "
                             f"--train_mode={cfg.train_mode} (use simclr-{cfg.train_mode}).")
        cfg.validate()
        from simclr_tf import train  # late: keep --help and flag errors fast

        import tensorflow as tf

        from simclr_tf import strategies

        if strategies.is_chief():  # other workers of a cluster write nothing into model_dir
            tf.io.gfile.makedirs(cfg.model_dir)
            cli_flags.write_flagfile(cfg, os.path.join(cfg.model_dir, "flags.txt"))
        try:
            train.run(cfg)
        except train.NonFiniteLossError as e:
            raise SystemExit(f"{prog}: error: {e}") from e

    cli_flags.run_program(main, prog)
