"""simclr-pretrain: contrastive pretraining with the loss --loss names (NT-Xent by default),
evaluated by the parts --evaluators names (the online linear probe and the kNN monitor by
default).

  simclr-pretrain --flagfile=flags/smoke.flags --model_dir=/tmp/simclr_smoke
"""

from simclr_tf.cli import _common
from simclr_tf.cli import flags as cli_flags

cli_flags.define_flags(train_mode="pretrain")


def run():
    _common.train_main("pretrain", "simclr-pretrain", __doc__)


if __name__ == "__main__":
    run()
