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

        from simclr_tf import checkpoints

        def write_flags():  # under the lock: a refused second run leaves it alone
            cli_flags.write_flagfile(cfg, os.path.join(cfg.model_dir, "flags.txt"))

        try:
            train.run(cfg, on_start=write_flags, stop_on_signals=True)
        except (train.NonFiniteLossError, checkpoints.CheckpointWriteError) as e:
            raise SystemExit(f"{prog}: error: {e}") from e
        except train.Interrupted as e:  # the checkpoint is saved and the line printed
            raise SystemExit(128 + e.signum) from e

    cli_flags.run_program(main, prog)
