"""Tools around a run: ``simclr-visualize``'s pictures (views, embedding, retrieval,
curves; ``pictures`` draws with matplotlib), the demo behind ``make demo`` and the paper's
studies behind ``simclr-ablate`` (``ablation``).

Imports every wing but ``simclr_tf.bench`` and ``simclr_tf.cli``."""
