"""``--evaluators=probe``: top-1 / top-5 of the supervised head on the centre-cropped eval
split (``top1``, ``top5``): the linear probe while pretraining, the trained head while
fine-tuning or distilling. Needs a head and labelled images; a run without either has none.
"""

OPTIONS = ()


def evaluator(run):
    """The part's entry point (``simclr_tf.evaluators``)."""
    from simclr_tf.evaluation import supervised  # noqa: PLC0415 (TensorFlow: at use only)

    if getattr(run.model, "supervised_head", None) is None or not run.source.classifiable:
        return None
    return supervised.Evaluator(run.strategy, run.model, run.eval_ds, run.num_classes)
