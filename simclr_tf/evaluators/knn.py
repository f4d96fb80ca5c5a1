"""``--evaluators=knn``: the kNN monitor while pretraining on labelled images (``knn_top1``):
each eval image classified by the weighted vote of its k nearest training images in the
encoder's feature space (``evaluation/knn.py`` has the method). Not while fine-tuning or
distilling, nor on unlabelled images; evaluated at step 0 too.
"""

from simclr_tf.core import options

OPTIONS = (
    options.Option(
        "knn_monitor", True, "False turns the kNN monitor off even when --evaluators names "
        "knn (the earlier switch; --evaluators=probe says the same)."),
    options.Option(
        "knn_bank_size", 10000, "Training images in the kNN monitor's bank: a seeded subset "
        "of at most this many (a TFDS split's first ones); 0 embeds the whole split every "
        "time.", check=options.at_least("knn_bank_size", 0)),
    options.Option("knn_k", 200, "Neighbours that vote in the kNN monitor.",
                   check=options.at_least("knn_k", 1)),
    options.Option("knn_temperature", 0.1, "A neighbour at cosine similarity s votes "
                   "exp(s / this) in the kNN monitor.",
                   check=options.positive("knn_temperature")),
)


def evaluator(run, knn_monitor: bool, knn_bank_size: int, knn_k: int,
              knn_temperature: float):
    """The part's entry point (``simclr_tf.evaluators``)."""
    from simclr_tf.evaluation import knn  # noqa: PLC0415 (TensorFlow: at use only)

    if not (run.train_mode == "pretrain" and knn_monitor and run.source.classifiable):
        return None
    cfg = run.cfg
    bank_source, bank_split = knn.bank_split(run.source, cfg.train_split, knn_bank_size,
                                             cfg.seed)
    bank = run.eval_input(bank_split, bank_source)
    return knn.KnnMonitor(run.strategy, run.model, bank, run.eval_ds,
                          run.source.info.num_classes, cfg.eval_batch_size, knn_k,
                          knn_temperature)
