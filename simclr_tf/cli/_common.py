"""What every training program does around ``train.run``."""

import os

from simclr_tf.cli import flags as cli_flags


def train_main(train_mode: str, prog: str, doc: str):
    """The main() of simclr-pretrain / simclr-finetune."""

    def main(cfg, explicit):
        del explicit
        if cfg.train_mode != train_mode:
            raise ValueError(f"{prog} runs --train_mode={train_mode}; got "
                             f"--train_mode={cfg.train_mode} (use simclr-{cfg.train_mode}).")
        cfg.validate()
        from simclr_tf.evaluation import supervised as evaluation
        from simclr_tf.runs import checkpoints, run_folder
        from simclr_tf.training import train  # late: keep --help and flag errors fast

        if cfg.mode == "eval":  # the original's evaluation job, beside a training job
            evaluation.evaluate_checkpoints(cfg)
            return

        def write_flags():  # under the lock: a refused second run leaves it alone
            run_folder.write_settings(cfg, os.path.join(cfg.model_dir, run_folder.SETTINGS_FILE))

        # --mode=train_then_eval: every run evaluates its final checkpoint when it has a
        # supervised head, as the original's train_then_eval did.
        try:
            train.run(cfg, on_start=write_flags, stop_on_signals=True)
        except (train.NonFiniteLossError, checkpoints.CheckpointWriteError) as e:
            raise SystemExit(f"{prog}: error: {e}") from e
        except train.Interrupted as e:  # the checkpoint is saved and the line printed
            raise SystemExit(128 + e.signum) from e

    cli_flags.run_program(main, prog, doc, from_checkpoint_run=train_mode == "finetune")


def run_checkpoint(cfg, explicit: set) -> str:
    """The checkpoint a program that reads a run uses: --checkpoint when given on the command
    line, else the run's own newest checkpoint in --model_dir, else --checkpoint from a
    flagfile (a fine-tuning run's flags.txt names its starting point there)."""
    import tensorflow as tf  # late: keep --help fast

    if cfg.checkpoint and "checkpoint" in explicit:
        return cfg.checkpoint
    if cfg.model_dir and tf.io.gfile.isdir(cfg.model_dir) and tf.train.latest_checkpoint(
            cfg.model_dir):
        return cfg.model_dir
    if cfg.checkpoint:
        return cfg.checkpoint
    raise ValueError(f"--model_dir={cfg.model_dir!r} holds no checkpoint; give the folder of a "
                     "run (its newest checkpoint is used) or --checkpoint=PREFIX.")


def run_model(cfg, explicit: set):
    """The model a program that reads one was given: the export ``--hub_module``, else the
    checkpoint ``run_checkpoint`` picks in the run (a ``runs.loader.LoadedModel``)."""
    from simclr_tf.runs import loader  # noqa: PLC0415 (late: keep --help fast)

    if cfg.hub_module:
        return loader.from_export(cfg.hub_module)
    return loader.from_checkpoint(run_checkpoint(cfg, explicit), cfg)
