"""The programs (simclr-pretrain, simclr-eval, ...): thin absl entry points, the only code
in the package that reads flags. Imports any wing; nothing outside cli/ imports it."""

import os

# TensorFlow's C++ INFO messages (e.g. "End of sequence" after every evaluation) would bury
# the progress lines; warnings and errors still show. Set the variable to 0 to see them all.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
