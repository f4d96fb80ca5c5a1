"""Training: the run's contrastive loss (a part of ``simclr_tf/losses``), the optimisers and
schedule, the step, the orbit trainer with its stop signals, the run's inputs, distillation,
and ``train.run``, which a program calls to pretrain or fine-tune.

Imports the wings below it: core, data, models, runs, evaluation, evaluators, losses."""
