"""simclr-distill: SimCLRv2's third stage, a student trained on a teacher's predictions.

  simclr-distill --teacher=FINETUNED_RUN_OR_EXPORT --model_dir=DIR [student flags] ...

The teacher (an export of simclr-finetune or simclr-convert, a fine-tuning run's folder or a
checkpoint) labels every training image with its softmax at --distill_temperature; the
student (--resnet_depth, --width_multiplier, --sk_ratio: the teacher's architecture for
self-distillation, a smaller one for big-to-small) learns them with the cross-entropy of the
SimCLRv2 paper, on the fine-tuning augmentation (crop and flip). --distill_weight below 1
adds the cross-entropy with the labels of the labelled subset (--train_label_fraction, ...).
"""

from simclr_tf.cli import _common
from simclr_tf.cli import flags as cli_flags

cli_flags.define_flags(train_mode="distill")


def run():
    _common.train_main("distill", "simclr-distill", __doc__)


if __name__ == "__main__":
    run()
