"""The evaluations of a run, one module each, found by ``--evaluators=NAME,...``
(``core.parts``); the default ``probe,knn`` is the linear probe's top-1 / top-5 and the kNN
monitor.

An evaluator module defines

- ``evaluator(run, **options)`` -> an evaluator, or None when it has nothing to evaluate in
  this run (kNN while fine-tuning, the probe of a model without a supervised head). ``run``
  is an ``evaluation.running.Run``: the strategy, the model, the source, the config, the
  head's classes and the inputs (``run.eval_ds``: the eval split centre-cropped, shared;
  ``run.eval_input(split)``; ``run.views_input(split, seed)``: pairs of training views).
  ``options`` are the values of its ``OPTIONS``.
- ``OPTIONS``: the ``options.Option``s it takes (flags of the programs).

The evaluator has ``evaluate(num_steps) -> {name: float}`` (``num_steps``: ``--eval_steps``
as a tensor, -1 for the whole split), called at every checkpoint interval and at the end of a
run, and by ``--mode=eval`` / ``simclr-eval`` on each checkpoint; every figure it returns
goes to TensorBoard (``model_dir/eval``), the eval line and summary.json, by its name (two
evaluators must not share one). Optionally ``at_start = True`` (evaluated at step 0 as well)
and ``note()`` (a few words for the eval line). It reads the model's weights as they are and
trains nothing.

The top of an evaluator module imports no TensorFlow (flags and ``--help`` read the
declarations): it imports its machinery inside ``evaluator()``. docs/extending.md walks
through adding one.
"""

# Today's defaults first; other evaluators follow by name.
ORDER = ("probe", "knn")
