"""simclr-export: a hub-style SavedModel of a run's checkpoint.

  simclr-export --model_dir=RUN --export_dir=DIR [--checkpoint=RUN/ckpt-N]

It exports the newest checkpoint of the run in --model_dir, built with the run's own
settings (RUN/flags.txt; flags on the command line take precedence), or the checkpoint given
by --checkpoint on the command line.
"""

from absl import flags

from simclr_tf.cli import _common
from simclr_tf.cli import flags as cli_flags

cli_flags.define_flags(train_mode="finetune")
EXPORT_DIR = flags.DEFINE_string("export_dir", None, "Where to write the SavedModel.")


def main(cfg, explicit):
    if not EXPORT_DIR.value:
        raise ValueError("--export_dir is required: the folder to write the SavedModel to.")
    from simclr_tf.runs import export as export_lib  # late: keep flag errors fast

    export_lib.check_target(EXPORT_DIR.value, "export_dir")  # before any model is built
    source = _common.run_checkpoint(cfg, explicit)

    path = export_lib.export_checkpoint(cfg, source, EXPORT_DIR.value)
    print(f"exported {source} to {path}", flush=True)


def run():
    cli_flags.run_program(main, "simclr-export", __doc__, extra=("export_dir",),
                          reads_run=True)


if __name__ == "__main__":
    run()
