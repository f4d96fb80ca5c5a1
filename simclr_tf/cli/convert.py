"""simclr-convert: a model of the original SimCLR code as a run of this project.

  simclr-convert --original=PATH --model_dir=OUT [--dataset=... --data_dir=...]

PATH is a SavedModel of the original (the published SimCLRv1 / v2 models), a training
checkpoint of its tf2 code (a ckpt-N prefix) or the folder holding such checkpoints.

The architecture (depth, width, selective kernels, stem, heads) is read from the checkpoint
and printed; architecture flags given here must agree with it. OUT gets ckpt-N (encoder,
projection head, and the supervised head when the original has one), flags.txt and the
export OUT/saved_model/N, so that `simclr-finetune --checkpoint=OUT`, `simclr-eval
--model_dir=OUT` and `--hub_module=OUT/saved_model/N` take it like any run. The data flags
given here are recorded in flags.txt for those programs.
"""

import os

from absl import flags

from simclr_tf.cli import flags as cli_flags

cli_flags.define_flags(train_mode="finetune")
ORIGINAL = flags.DEFINE_string(
    "original", None, "The original's model: a SavedModel folder, a training checkpoint's "
    "ckpt-N prefix, or the folder holding the checkpoints.")


def _write_flags(cfg):
    from simclr_tf.runs import run_folder  # noqa: PLC0415 (late: keep --help fast)

    run_folder.write_settings(cfg, os.path.join(cfg.model_dir, run_folder.SETTINGS_FILE))


def main(cfg, explicit):
    if not ORIGINAL.value:
        raise ValueError("--original is required: the original's SavedModel folder, ckpt-N "
                         "prefix or checkpoint folder.")
    from simclr_tf.interop import convert  # late: keep --help and flag errors fast

    convert.convert_checkpoint(ORIGINAL.value, cfg, explicit, before_save=_write_flags)


def run():
    cli_flags.run_program(main, "simclr-convert", __doc__, extra=("original",))


if __name__ == "__main__":
    run()
