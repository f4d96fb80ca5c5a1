"""The networks: the ResNet encoder (v1 / v2, selective kernels), the projection and
supervised heads, and the SimCLR model that joins them. ``kernels/`` holds the CPU kernels
(small convolutions as matmuls, batch norm from sums) and the measured choice between them
and TensorFlow's own.

Imports only ``simclr_tf.core``."""
