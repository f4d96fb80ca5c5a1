"""``simclr-bench``: the step and its variants, the input pipeline from arrays and from
files, evaluation, memory, start-up and the loss against the batch, measured in one run.

Imports every wing but ``simclr_tf.tools`` and ``simclr_tf.cli``."""
