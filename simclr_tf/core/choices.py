"""The accepted values of the settings with a fixed set or range, and the checks that name a
bad one.

Free of TensorFlow, so ``config`` validates a run before TensorFlow loads. The layer modules
(``resnet``, ``heads``, ``optim``, ``augment``, ``model``) check their own arguments with the
same functions: a check names the value as a flag (``--sk_ratio=...``), or with
``flag=False`` as a Python argument (``sk_ratio=...``).
"""

TRAIN_MODES = ("pretrain", "finetune", "distill")
MODES = ("train", "eval", "train_then_eval")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
COLOR_JITTER_IMPLS = ("v1", "v2")
ON_NONFINITE = ("stop", "rollback")
OPTIMIZERS = ("lars", "momentum", "adam")
LR_SCALINGS = ("linear", "sqrt")
PROJ_HEAD_MODES = ("none", "linear", "nonlinear")
# --augmentations: the paper's figure-5 transformations, in its order.
AUGMENTATIONS = ("crop", "cutout", "color", "sobel", "noise", "blur", "rotate")
RESNET_DEPTHS = (18, 34, 50, 101, 152, 200)
# fine_tune_after_block: -1 trains everything, k in 0..4 freezes the stem and groups 1..k.
FINE_TUNE_AFTER_BLOCKS = range(-1, 5)


def _named(name: str, flag: bool) -> str:
    return f"--{name}" if flag else name


def check_choice(name: str, value, accepted, flag: bool = True):
    """Raises ValueError unless ``value`` is one of ``accepted``."""
    if value not in accepted:
        raise ValueError(f"{_named(name, flag)}={value!r} is not supported; use one of "
                         f"{', '.join(map(str, accepted))}.")


def check_at_least(name: str, value, minimum, flag: bool = True):
    """Raises ValueError unless ``value`` >= ``minimum``."""
    if value < minimum:
        raise ValueError(f"{_named(name, flag)}={value} must be >= {minimum}.")


def check_positive(name: str, value, flag: bool = True):
    """Raises ValueError unless ``value`` > 0."""
    if not value > 0:
        raise ValueError(f"{_named(name, flag)}={value} must be > 0.")


def check_sk_ratio(value: float, flag: bool = True):
    """The selective-kernel ratio: in [0, 1)."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{_named('sk_ratio', flag)}={value} must be in [0, 1) (0.0625 in "
                         "SimCLRv2; 0 disables selective kernels).")


def check_se_ratio(value: float, flag: bool = True):
    """The squeeze-and-excitation ratio: in [0, 1)."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{_named('se_ratio', flag)}={value} must be in [0, 1) (0 disables "
                         "squeeze-and-excitation).")


def check_fine_tune_after_block(value: int, flag: bool = True):
    """-1, or the last frozen block group 0..4."""
    if value not in FINE_TUNE_AFTER_BLOCKS:
        raise ValueError(f"{_named('fine_tune_after_block', flag)}={value} must be -1 (train "
                         "everything) or 0..4 (freeze the stem and the block groups up to that "
                         "one; 4 = linear evaluation).")


def parse_augmentations(text: str, flag: bool = True) -> tuple:
    """``"crop,color"`` -> ``("crop", "color")``; empty -> (); a bad name is named."""
    names = tuple(name.strip() for name in text.split(",")) if text.strip() else ()
    for name in names:
        if name not in AUGMENTATIONS:
            raise ValueError(f"{_named('augmentations', flag)}={text!r}: {name!r} is not a "
                             f"transformation; use a comma-separated list of "
                             f"{', '.join(AUGMENTATIONS)} (or nothing for SimCLR's standard "
                             "views).")
    return names


def check_tpu_address(strategy: str, tpu_name, master):
    """A TPU strategy needs the TPU's name or its master address."""
    if strategy == "tpu" and not (tpu_name or master):
        raise ValueError("--strategy=tpu (or --use_tpu) needs --tpu_name=NAME (the TPU name, "
                         "'local' on a TPU VM) or --master=grpc://ADDRESS.")


def check_pretraining_trains_everything(fine_tune_after_block: int, train_mode: str,
                                        flag: bool = True):
    """Freezing part of the network is for fine-tuning: pretraining needs -1."""
    if train_mode == "pretrain" and fine_tune_after_block != -1:
        also = " (or --linear_eval)" if flag else ""
        raise ValueError(f"{_named('fine_tune_after_block', flag)}={fine_tune_after_block}"
                         f"{also} applies to fine-tuning only; pretraining trains the whole "
                         "network (use -1).")
