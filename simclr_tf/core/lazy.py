"""A module imported on its first use: parts (losses, evaluators) are read for their declared
options before TensorFlow loads, and use TensorFlow once they run.

``tf = lazy.load("tensorflow")`` at the top of a part module; ``tf.matmul`` then imports
TensorFlow the first time it is reached (inside a step, that is while it is traced). Type
annotations naming ``tf.Tensor`` need ``from __future__ import annotations``.
"""

import importlib


class _Deferred:
    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self):
        return f"<module {self._name!r}, imported on first use>"


def load(name: str):
    """The module ``name``, imported when one of its attributes is first read."""
    return _Deferred(name)
