"""Files written by the original SimCLR code (google-research/simclr): its training
checkpoints and its SavedModels, read by their own layout and converted into this package's
model and export (``simclr-convert``).

Imports ``simclr_tf.core``, ``simclr_tf.models`` and ``simclr_tf.runs``."""
