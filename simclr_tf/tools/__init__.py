"""Tools around a run: ``simclr-visualize``'s pictures (views, embedding, retrieval,
curves; ``pictures`` draws with matplotlib) and the demo behind ``make demo``.

Imports every wing but ``simclr_tf.bench`` and ``simclr_tf.cli``."""
