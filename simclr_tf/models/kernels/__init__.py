"""CPU kernels beside TensorFlow's: small convolutions as a matmul (``convs``), batch norm
on sums (``cpu_batch_norm``), and ``kernel_choice``, which times both ways per layer shape
on the machine and keeps the faster. On GPU and TPU the models use TensorFlow's kernels.

Imports only ``simclr_tf.core``."""
