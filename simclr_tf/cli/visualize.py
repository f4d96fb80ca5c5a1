"""simclr-visualize: pictures of a run or an export, as PNG files (no display needed).

  simclr-visualize --model_dir=RUN --output_dir=DIR
  simclr-visualize --hub_module=EXPORT --output_dir=DIR [--dataset=... --image_size=...]

It writes views.png (training images and pairs of their augmented views, from the run's own
pipeline and flags), embedding.png (the encoder's features of a labelled split in 2-D, by
class), retrieval.png (query images and their nearest neighbours) and, for a run, curves.png
(its TensorBoard scalars; --compare_dirs=RUN2,... draws other runs' in the same panels). A
run is read with its own settings (RUN/flags.txt) and its newest checkpoint; an export of a
run (RUN/saved_model/N) takes that run's settings too. Flags on the command line take
precedence.
"""

import dataclasses

from absl import flags

from simclr_tf.cli import _common
from simclr_tf.cli import flags as cli_flags

cli_flags.define_flags(train_mode="pretrain")
OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where to write the PNG files.")
NUM_POINTS = flags.DEFINE_integer("num_points", 1000, "Images of the split embedded (a "
                                  "seeded subset).")
METHOD = flags.DEFINE_enum("embedding_method", "auto", ["auto", "umap", "tsne", "pca"],
                           "2-D map: auto = UMAP when umap-learn is installed, else t-SNE "
                           "(scikit-learn), else PCA.")
SPLIT = flags.DEFINE_string("visualize_split", None, "Labelled split to embed (default: "
                            "--eval_split).")
COMPARE = flags.DEFINE_list("compare_dirs", [], "Other runs whose training curves are drawn in "
                            "the same panels of curves.png as --model_dir's (e.g. the same run "
                            "with another flag).")
EXTRA = ("output_dir", "num_points", "embedding_method", "visualize_split", "compare_dirs")


def _settings(cfg, explicit: set):
    """``cfg``, or for an export of a run given without --model_dir or --flagfile, that run's
    settings with the command line's flags on top."""
    if cfg.model_dir or not cfg.hub_module or "flagfile" in explicit:
        return cfg
    from simclr_tf.runs import run_folder  # noqa: PLC0415 (late: keep --help fast)

    run_flags = run_folder.settings_file(cfg.hub_module)
    if not run_flags:
        return cfg
    print(f"simclr-visualize: using the settings of the export's run in {run_flags} (flags "
          "on the command line take precedence)", flush=True)
    given = {n: getattr(cfg, n) for n in explicit if n in cfg.__dataclass_fields__}
    return dataclasses.replace(cli_flags.from_flagfile(run_flags), **given)


def main(cfg, explicit):
    if not OUTPUT_DIR.value:
        raise ValueError("--output_dir is required: the folder to write the pictures to.")
    if not cfg.model_dir and not cfg.hub_module:
        raise ValueError("give --model_dir=RUN (a run of simclr-pretrain or simclr-finetune) "
                         "or --hub_module=EXPORT (a SavedModel of this project).")
    cfg = _settings(cfg, explicit)

    from simclr_tf.data import pipeline as data_lib
    from simclr_tf.runs import run_folder
    from simclr_tf.tools import visualize

    run_folder.output_folder(OUTPUT_DIR.value, "output_dir")

    source = data_lib.get_source(cfg.dataset, cfg.data_dir, seed=cfg.seed,
                                 folder_labels=cfg.folder_labels)
    loaded = _common.run_model(cfg, explicit)
    options = visualize.Options(num_points=NUM_POINTS.value, method=METHOD.value,
                                split=SPLIT.value, compare_dirs=tuple(COMPARE.value))
    written = visualize.draw(OUTPUT_DIR.value, cfg, source,
                             visualize.model_features(loaded.holder), cfg.model_dir, options,
                             loaded.description)
    print("simclr-visualize: wrote " + ", ".join(written), flush=True)


def run():
    cli_flags.run_program(main, "simclr-visualize", __doc__, extra=EXTRA, reads_run=True)


if __name__ == "__main__":
    run()
