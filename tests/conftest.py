"""Test set-up shared by every test module.

Splits the one physical CPU into two logical devices before TensorFlow initialises, so the
distributed tests run a real 2-replica MirroredStrategy on a laptop or a CI box.
"""

import atexit
import contextlib
import os
import shutil
import sys
import tempfile
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The small convolutions' measured choices (kernel_choice) go to a folder of this session, not
# the user's ~/.cache; the programs the tests start inherit it.
os.environ["SIMCLR_TF_CACHE_DIR"] = tempfile.mkdtemp(prefix="simclr_tf_test_cache.")
atexit.register(shutil.rmtree, os.environ["SIMCLR_TF_CACHE_DIR"], True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# Before TensorFlow: the package's environment (Keras 2, oneDNN's kernels), as users get it.
import simclr_tf  # noqa: E402, F401, I001
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

LOGICAL_CPUS = ("/cpu:0", "/cpu:1")

# The run every training test starts from: a width-0.25 ResNet-18 at 16 px, 4 steps of 8
# images on the built-in set, checkpoints every 2 steps, no export (export_test turns it on),
# no kNN monitor (knn_test turns it on; smoke.flags keeps it, with a small bank), no view
# grid in TensorBoard (visualize_test turns it on). The kernels are the fixed choice
# (calibrate_kernels=False): measured ones would rest on timings taken under the suite's own
# load, so which kernels a test ran, and its rounding, would change from run to run.
TINY = dict(dataset="shapes", image_size=16, resnet_depth=18, width_multiplier=0.25,
            num_proj_layers=2, proj_out_dim=16, train_batch_size=8, eval_batch_size=50,
            train_steps=4, checkpoint_steps=2, eval_steps=1, warmup_epochs=0,
            learning_rate=0.5, weight_decay=1e-4, temperature=0.5, global_bn=False,
            strategy="default", color_jitter_strength=0.5, keep_hub_module_max=0,
            knn_monitor=False, views_summary=False, calibrate_kernels=False)


def make_tiny(model_dir, **overrides):
    """The tiny run's ``Config`` in ``model_dir``, with ``overrides``."""
    from simclr_tf.core.config import Config  # noqa: PLC0415 (after the device set-up above)

    return Config(**dict(TINY, model_dir=str(model_dir), **overrides))


@pytest.fixture(scope="session")
def tiny():
    """``tiny(model_dir, **overrides)``: the tiny run's ``Config`` in ``model_dir``."""
    return make_tiny


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """``(cfg, summary)`` of the one trained run the tests share (once per pytest worker): the
    tiny run with the kNN monitor (a bank of 100) and the alignment and uniformity evaluator,
    the view grid in TensorBoard, flags.txt as
    the programs write it, checkpoints at steps 2 and 4 and the export of step 4. Read it,
    never write into it: copy it first (``shutil.copytree``) to change it."""
    from simclr_tf.runs import run_folder  # noqa: PLC0415 (after the device set-up above)
    from simclr_tf.training import train  # noqa: PLC0415

    model_dir = tmp_path_factory.mktemp("trained") / "run"
    cfg = make_tiny(model_dir, knn_monitor=True, knn_bank_size=100, keep_hub_module_max=1,
                    views_summary=True, evaluators="probe,knn,align_uniform")
    with _recording_projections(PROJECTIONS.setdefault(str(model_dir), [])):
        summary = train.run(cfg, on_start=lambda: run_folder.write_settings(
            cfg, os.path.join(str(model_dir), run_folder.SETTINGS_FILE)))
    return cfg, summary


# {model_dir: [(z1, z2) of each training step, in order]}: the projections the shared run's
# contrastive loss received, recorded as the run computed them (train_test recomputes the
# run's contrastive figures from them).
PROJECTIONS = {}


@contextlib.contextmanager
def _recording_projections(seen):
    """While inside, every executed call of ``losses.of_config`` appends its two
    projections (NumPy) to ``seen``, also inside the traced training loop (a CPU-only
    ``numpy_function``: tests only)."""
    from simclr_tf.training import losses  # noqa: PLC0415 (after the device set-up above)

    original = losses.of_config

    def recorded(z1, z2, *args, **kwargs):
        def keep(a, b):
            seen.append((a, b))
            return np.int64(len(seen))

        done = tf.numpy_function(keep, [z1, z2], tf.int64)
        with tf.control_dependencies([done]):
            return original(tf.identity(z1), tf.identity(z2), *args, **kwargs)

    losses.of_config = recorded
    try:
        yield
    finally:
        losses.of_config = original


class PinnedKernels:
    """A kernel chooser (``kernel_choice.KernelChooser``'s interface) that measures nothing:
    every candidate layer it is asked about runs the other way (``other``: the small
    convolutions as one matmul, the training batch norms on sums + a depthwise convolution)
    or TF's kernel. ``asked`` lists the shapes' keys."""

    def __init__(self, other: bool):
        self.other, self.asked = other, []

    def __call__(self, shape) -> bool:
        self.asked.append(shape.key)
        return self.other


# The two ways a CPU model in float32 can run its candidate layers, each for every candidate.
KERNEL_CHOICES = ("tf", "other")


@pytest.fixture(params=KERNEL_CHOICES)
def kernels(request, monkeypatch):
    """Each test that takes it runs twice, its kernels pinned: ``kernels.name`` "tf" (TF's
    convolution and batch norm in every candidate layer) or "other" (the matmul convolutions
    and the batch norm on sums in every one), in the models ``simclr_model.from_config``
    builds (given ``kernels.overrides`` in their config) and in those built with
    ``kernels.chooser``. The measured choice would mix the two by the suite's load."""
    from simclr_tf.models.kernels import kernel_choice  # noqa: PLC0415 (after the device set-up)

    chooser = PinnedKernels(request.param == "other")
    monkeypatch.setattr(kernel_choice, "KernelChooser", lambda *args, **kwargs: chooser)
    # from_config asks for a chooser on a CPU in float32 only, and never with --deterministic.
    overrides = dict(matmul_small_convs=True, calibrate_kernels=True, deterministic=False)
    return types.SimpleNamespace(name=request.param, chooser=chooser, overrides=overrides)


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    """``user_package(name, {module: source})``: a package of a user's own modules, written
    into this test's folder and put on ``sys.path`` (as a user's project would be) for the
    test; returns ``name``."""
    def make(name, modules):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "__init__.py").write_text("")
        for module, text in modules.items():
            (folder / f"{module}.py").write_text(text)
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, name, raising=False)  # another test's of this name
        return name
    return make


@pytest.fixture(scope="session")
def two_replicas():
    """A MirroredStrategy over the two logical CPUs."""
    return tf.distribute.MirroredStrategy(list(LOGICAL_CPUS))


@pytest.fixture(scope="session")
def one_replica():
    """A MirroredStrategy over one logical CPU (the same code path, one replica)."""
    return tf.distribute.MirroredStrategy([LOGICAL_CPUS[0]])


# The original's ResNet-18 (CIFAR stem, width 0.25, 3-layer head to 32, 10 classes) as its
# own code exports it: (arguments of original_structure.build, listing, scale).
ORIGINAL_R18 = ((18, 0.25, 0.0, True, 10, 3, 32), "r18_cifar", 0.25)


@pytest.fixture(scope="session")
def original_r18_savedmodel(tmp_path_factory):
    """(folder as published, SavedModel path, values by training key, the original's model)."""
    import original_structure  # noqa: PLC0415

    arch, listing, scale = ORIGINAL_R18
    folder = str(tmp_path_factory.mktemp("original") / listing)
    path, values, model = original_structure.write_savedmodel(folder, listing, scale, arch,
                                                              seed=3)
    return folder, path, values, model


def built_tiny_model(num_proj_layers=2, proj_out_dim=16):
    """A ResNet-18 x0.25 SimCLR model for 16 px images, every variable created."""
    from simclr_tf.models import simclr_model as model_lib  # noqa: PLC0415 (after the device set-up above)

    model = model_lib.build_model(resnet_depth=18, width_multiplier=0.25, image_size=16,
                                  proj_head_mode="nonlinear", num_proj_layers=num_proj_layers,
                                  proj_out_dim=proj_out_dim)
    model(tf.zeros([1, 16, 16, 3]), training=False)
    return model
