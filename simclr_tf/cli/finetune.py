"""simclr-finetune: fine-tuning or linear evaluation from a pretraining checkpoint.

  simclr-finetune --checkpoint=PRETRAIN_MODEL_DIR --linear_eval --model_dir=DIR ...

``--linear_eval`` (the same as ``--fine_tune_after_block=4``) trains a linear classifier on
the frozen encoder, batch norm in inference mode: the paper's linear evaluation protocol.
"""

from simclr_tf.cli import _common
from simclr_tf.cli import flags as cli_flags

cli_flags.define_flags(train_mode="finetune")


def run():
    _common.train_main("finetune", "simclr-finetune", __doc__)


if __name__ == "__main__":
    run()
