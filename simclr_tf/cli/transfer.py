"""simclr-transfer: the SimCLR paper's linear transfer evaluation of a frozen encoder.

  simclr-transfer --hub_module=EXPORT --datasets=cifar10,dtd --data_dir=D --output_dir=DIR
  simclr-transfer --model_dir=RUN --datasets=... (the run's newest checkpoint)

Per dataset (their TFDS names, prepared in --data_dir: nothing is downloaded): the encoder's
features (final_avg_pool, inference mode) of the images' centred squares at --image_size; an
L2-regularised multinomial logistic regression, its strength chosen among
--transfer_grid_size log-spaced values in [1e-6, 1e5] on the validation split (the
dataset's, else a seeded 20% of the training split), refitted on training + validation and
scored on test by the dataset's metric (top-1, mean per-class accuracy, or VOC2007's
11-point mAP). It writes DIR/transfer.md and DIR/transfer.json, with the paper's figure for
its ResNet-50 (4x) beside each.
"""

from absl import flags

from simclr_tf.cli import _common
from simclr_tf.cli import flags as cli_flags

cli_flags.define_flags(train_mode="finetune", image_size=224)
DATASETS = flags.DEFINE_list(
    "datasets", "cifar10", "Transfer datasets: any of food101, cifar10, cifar100, sun397, "
    "cars196, voc2007, dtd, oxford_iiit_pet, caltech101, oxford_flowers102 (or 'all').")
OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where to write transfer.md and "
                                 "transfer.json.")
GRID = flags.DEFINE_integer("transfer_grid_size", 45, "Regularisation strengths tried "
                            "(log-spaced in [1e-6, 1e5]; the paper's 45).", lower_bound=1)
EXTRA = ("datasets", "output_dir", "transfer_grid_size")


def _model(cfg, explicit):
    """(images -> features, architecture name, what was loaded)."""
    from simclr_tf.evaluation import transfer  # noqa: PLC0415 (late: keep --help fast)
    from simclr_tf.tools import visualize  # noqa: PLC0415

    loaded = _common.run_model(cfg, explicit)
    arch = loaded.settings  # an export's run, when it sits in one
    architecture = (transfer.architecture_name(arch.resnet_depth, arch.width_multiplier,
                                               arch.sk_ratio) if arch is not None else
                    "an export (architecture not recorded beside it)")
    return visualize.model_features(loaded.holder), architecture, loaded.description


def main(cfg, explicit):
    from simclr_tf.evaluation import transfer_datasets  # noqa: PLC0415

    if not OUTPUT_DIR.value:
        raise ValueError("--output_dir is required: the folder for transfer.md and "
                         "transfer.json.")
    if not cfg.model_dir and not cfg.hub_module:
        raise ValueError("give --hub_module=EXPORT (a SavedModel of this project) or "
                         "--model_dir=RUN (a run's newest checkpoint).")
    from simclr_tf.runs import run_folder  # noqa: PLC0415

    run_folder.output_folder(OUTPUT_DIR.value, "output_dir")
    names = list(transfer_datasets.DATASETS) if DATASETS.value == ["all"] else DATASETS.value
    for name in names:
        transfer_datasets.lookup(name)  # an unknown name stops before any model is loaded
    from simclr_tf.evaluation import transfer  # noqa: PLC0415

    features_of, architecture, what = _model(cfg, explicit)
    options = transfer.Options(image_size=cfg.image_size, batch_size=cfg.eval_batch_size,
                               grid_size=GRID.value, seed=cfg.seed, data_dir=cfg.data_dir)
    transfer.run(names, features_of, options, OUTPUT_DIR.value, architecture, what)
    print(f"simclr-transfer: wrote {OUTPUT_DIR.value}/transfer.md and transfer.json",
          flush=True)


def run():
    cli_flags.run_program(main, "simclr-transfer", __doc__, extra=EXTRA, reads_run=True)


if __name__ == "__main__":
    run()
