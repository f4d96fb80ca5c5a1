"""simclr-export: a hub-style SavedModel of a checkpoint.

  simclr-export --flagfile=RUN/flags.txt --export_dir=DIR [--checkpoint=RUN/ckpt-N]

Without --checkpoint it exports the newest checkpoint in --model_dir. The architecture flags
(depth, width, heads, image size) must be the run's: pass the run's flags.txt.
"""

from absl import flags

from simclr_tf.cli import flags as cli_flags

cli_flags.define_flags(train_mode="finetune")
EXPORT_DIR = flags.DEFINE_string("export_dir", None, "Where to write the SavedModel.")


def main(cfg):
    if not EXPORT_DIR.value:
        raise ValueError("--export_dir is required: the folder to write the SavedModel to.")
    source = cfg.checkpoint or cfg.model_dir
    if not source:
        raise ValueError("give --model_dir (its newest checkpoint is exported) or "
                         "--checkpoint=PREFIX.")
    from simclr_tf import train  # late: keep flag errors fast

    path = train.export_checkpoint(cfg, source, EXPORT_DIR.value)
    print(f"exported {source} to {path}", flush=True)


def run():
    cli_flags.run_program(main, "simclr-export")


if __name__ == "__main__":
    run()
