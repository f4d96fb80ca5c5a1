"""Test set-up shared by every test module.

Splits the one physical CPU into two logical devices before TensorFlow initialises, so the
distributed tests run a real 2-replica MirroredStrategy on a laptop or a CI box.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

LOGICAL_CPUS = ("/cpu:0", "/cpu:1")


@pytest.fixture(scope="session")
def two_replicas():
    """A MirroredStrategy over the two logical CPUs."""
    return tf.distribute.MirroredStrategy(list(LOGICAL_CPUS))


@pytest.fixture(scope="session")
def one_replica():
    """A MirroredStrategy over one logical CPU (the same code path, one replica)."""
    return tf.distribute.MirroredStrategy([LOGICAL_CPUS[0]])
