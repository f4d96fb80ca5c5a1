"""What a run leaves on disk and where it runs: the run folder (lock, ``flags.txt``, the
check of every output folder), checkpoints (atomic writes, restore for each purpose), the
hub-style SavedModel export, and the ``tf.distribute`` strategies.

Imports ``simclr_tf.core``, ``simclr_tf.data`` and ``simclr_tf.models``."""
