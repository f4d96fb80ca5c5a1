"""simclr_tf: SimCLR (Chen et al., ICML 2020, and SimCLRv2) for TensorFlow 2 / Keras 2.

Importing the package selects Keras 2 (``tf_keras``) for every TensorFlow component that
consults ``TF_USE_LEGACY_KERAS`` (TF Hub, Model Garden). It is the only place that sets it.
The package's own modules always import ``tf_keras`` directly.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

__version__ = "0.1.0"
