"""simclr_tf: SimCLR (Chen et al., ICML 2020, and SimCLRv2) for TensorFlow 2 / Keras 2.

Importing the package selects Keras 2 (``tf_keras``) for every TensorFlow component that
consults ``TF_USE_LEGACY_KERAS`` (TF Hub, Model Garden). It is the only place that sets it.
The package's own modules always import ``tf_keras`` directly.

It also turns on TensorFlow's oneDNN kernels on every x86 CPU (``TF_ENABLE_ONEDNN_OPTS=1``;
TensorFlow itself turns them on only for CPUs with AVX-512 VNNI and newer): on a 2-core AVX2
AMD EPYC the pretraining step runs 1.3x faster with them (docs/performance.md), and the
CPU's allocator then keeps the peak-memory statistics ``simclr-bench`` reads. Both take
effect only when the package is imported before TensorFlow, and a value already set wins.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"
