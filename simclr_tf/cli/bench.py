"""simclr-bench: speed of the pretraining step, the matmul peak, the input pipeline and eval.

  simclr-bench                                   # ResNet-18, 32 px, batch 64 (the target)
  simclr-bench --image_size=224 --parts=input    # the input pipeline at 224 px
  simclr-bench --json                            # one JSON object on stdout

Every training flag applies (--resnet_depth, --width_multiplier, --image_size,
--train_batch_size, --precision, --jit_compile, --global_bn, --use_blur, --strategy, ...).
"""

import json

from absl import flags

from simclr_tf.cli import flags as cli_flags

cli_flags.define_flags(train_mode="pretrain", resnet_depth=18, width_multiplier=1.0,
                       image_size=32, train_batch_size=64, eval_batch_size=64,
                       strategy="default")
flags.DEFINE_bool("json", False, "Print one JSON object instead of the table.")
flags.DEFINE_list("parts", ["step", "input", "eval"], "What to measure: step, input, eval; "
                  "also memory (RSS over 2,000 smoke steps), startup (100,000-image folder), "
                  "loss_scaling (NT-Xent and the step against the global batch) and chunks "
                  "(the step's time and peak memory against --embedding_chunks).")
flags.DEFINE_list("chunk_counts", ["1", "2", "4", "8"], "chunks: the --embedding_chunks "
                  "measured (those that divide a replica's batch).")
flags.DEFINE_list("scaling_batches", ["256", "512", "1024", "2048", "4096"],
                  "loss_scaling: the global batches N.")
flags.DEFINE_integer("file_images", 64, "input_files: how many JPEGs to write.")
flags.DEFINE_integer("file_height", 375, "input_files: the JPEGs' height.")
flags.DEFINE_integer("file_width", 500, "input_files: the JPEGs' width.")
flags.DEFINE_float("file_seconds", 4.0, "input_files: seconds of reading per measurement.")
flags.DEFINE_integer("file_repeats", 3, "input_files: interleaved repetitions of the "
                     "measurements (min, median and max are reported).")
flags.DEFINE_integer("step_max_batch", 4096, "loss_scaling: time the whole step only up to "
                     "this global batch (the loss alone at every N).")
flags.DEFINE_list("variants", [], "Step variants to measure beside the default step, in the "
                  "same run: sync_bn_stock_convs, sync_bn_one_replica, stock_convs, no_blur, "
                  "momentum, xla, mixed_bfloat16.")
flags.DEFINE_integer("timed_runs", 10, "Timed runs of the step (the median is reported, "
                     "with the min and max).")
flags.DEFINE_integer("repeat", 1, "Run the whole benchmark this many times, interleaving "
                     "everything it measures; every figure is then the median, with _min "
                     "and _max (the ranges the docs quote).")
flags.DEFINE_integer("steps_per_run", 2, "Steps inside one tf.function call per timed run.")
flags.DEFINE_integer("matmul_calls", 10, "Timed matmul calls, before and after the step.")
flags.DEFINE_float("input_seconds", 8.0, "Seconds of timed input-pipeline reading.")
flags.DEFINE_float("eval_seconds", 8.0, "Seconds of timed evaluation.")
flags.DEFINE_integer("source_height", 256, "Height of the in-memory source images.")
flags.DEFINE_integer("source_width", 320, "Width of the in-memory source images.")

FLAGS = flags.FLAGS
_EXTRA = ("json", "parts", "variants", "repeat", "timed_runs", "steps_per_run", "matmul_calls",
          "input_seconds", "eval_seconds", "source_height", "source_width", "scaling_batches",
          "step_max_batch", "file_images", "file_height", "file_width", "file_seconds",
          "file_repeats", "chunk_counts")


def _positive_ints(values, flag: str, example: str) -> tuple:
    try:
        batches = tuple(int(v) for v in values)
    except ValueError:
        batches = ()
    if not batches or min(batches) < 1:
        raise ValueError(f"--{flag}={','.join(values)} must be positive integers, "
                         f"e.g. {example}.")
    return batches


def main(cfg, explicit):
    del explicit
    from simclr_tf.bench import suite  # late: keep --help and flag errors fast

    options = suite.Options(
        timed_runs=FLAGS.timed_runs, steps_per_run=FLAGS.steps_per_run,
        matmul_calls=FLAGS.matmul_calls, input_seconds=FLAGS.input_seconds,
        eval_seconds=FLAGS.eval_seconds, source_height=FLAGS.source_height,
        source_width=FLAGS.source_width, parts=tuple(FLAGS.parts),
        variants=tuple(FLAGS.variants),
        scaling_batches=_positive_ints(FLAGS.scaling_batches, "scaling_batches", "256,512,1024"),
        step_max_batch=FLAGS.step_max_batch, file_images=FLAGS.file_images,
        file_height=FLAGS.file_height, file_width=FLAGS.file_width,
        file_seconds=FLAGS.file_seconds, file_repeats=FLAGS.file_repeats,
        chunk_counts=_positive_ints(FLAGS.chunk_counts, "chunk_counts", "1,2,4,8"))
    for name in ("repeat", "timed_runs", "steps_per_run", "matmul_calls", "source_height",
                 "source_width", "file_images", "file_height", "file_width", "file_repeats"):
        if getattr(FLAGS, name) < 1:
            raise ValueError(f"--{name}={getattr(FLAGS, name)} must be >= 1.")
    report = (lambda _: None) if FLAGS.json else (lambda s: print(s, flush=True))
    from simclr_tf.bench import repeat as bench_repeat  # noqa: PLC0415

    result = bench_repeat.repeat(lambda: suite.run(cfg, options, report), FLAGS.repeat,
                                 report)
    if FLAGS.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(suite.format_table(cfg, result))


def run():
    cli_flags.run_program(main, "simclr-bench", __doc__, extra=_EXTRA)


if __name__ == "__main__":
    run()
