"""Images in, views out: the sources (TFDS, image folders, arrays, the built-in ``shapes``
set), label subsets, the augmentations, decoding straight to the crops (``file_views``), the
tf.data pipelines and the pairs of views shown in TensorBoard.

Imports only ``simclr_tf.core``."""
