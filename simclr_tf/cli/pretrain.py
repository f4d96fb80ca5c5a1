"""simclr-pretrain: contrastive pretraining (NT-Xent), with the optional online linear probe.

  simclr-pretrain --flagfile=flags/smoke.flags --model_dir=/tmp/simclr_smoke
"""

from simclr_tf.cli import _common
from simclr_tf.cli import flags as cli_flags

cli_flags.define_flags(train_mode="pretrain")


def run():
    _common.train_main("pretrain", "simclr-pretrain", __doc__)


if __name__ == "__main__":
    run()
