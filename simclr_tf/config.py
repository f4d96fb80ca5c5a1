"""The typed configuration of the training programs, with validation at the boundary.

Field names are the original's flag names wherever a flag means the same thing (docs/method.md).
Deliberate differences: ``use_tpu`` defaults to False and ``strategy='auto'`` picks what the
machine has; ``dataset`` defaults to the built-in ``shapes`` set; ``global_bn`` defaults to
True as in the original.
"""

import dataclasses
import os
from typing import Optional

from simclr_tf import heads
from simclr_tf import optim
from simclr_tf import resnet
from simclr_tf import subsets

TRAIN_MODES = ("pretrain", "finetune")
MODES = ("train", "eval", "train_then_eval")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
COLOR_JITTER_IMPLS = ("v1", "v2")
ON_NONFINITE = ("stop", "rollback")


@dataclasses.dataclass
class Config:
    """Everything a pretraining, fine-tuning or evaluation run needs."""

    # What to run and where.
    train_mode: str = "pretrain"
    mode: str = "train"
    model_dir: Optional[str] = None
    seed: int = 0
    # Data.
    dataset: str = "shapes"
    data_dir: Optional[str] = None
    train_split: str = "train"
    eval_split: str = "validation"
    cache_dataset: bool = False
    folder_labels: bool = True
    train_label_fraction: float = 0.0
    train_examples_per_class: int = 0
    train_label_file: Optional[str] = None
    image_size: int = 224
    # Durations (steps win over epochs when > 0).
    train_batch_size: int = 512
    eval_batch_size: int = 256
    train_epochs: float = 100
    train_steps: int = 0
    eval_steps: int = 0
    warmup_epochs: float = 10
    checkpoint_epochs: float = 1
    checkpoint_steps: int = 0
    steps_per_loop: int = 0
    on_nonfinite: str = "stop"
    deterministic: bool = False
    keep_checkpoint_max: int = 5
    keep_hub_module_max: int = 1
    # Optimisation.
    optimizer: str = "lars"
    learning_rate: float = 0.3
    learning_rate_scaling: str = "linear"
    momentum: float = 0.9
    weight_decay: float = 1e-6
    batch_norm_decay: float = 0.9
    temperature: float = 0.1
    hidden_norm: bool = True
    # Model.
    resnet_depth: int = 50
    width_multiplier: float = 1.0
    sk_ratio: float = 0.0
    se_ratio: float = 0.0
    global_bn: bool = True
    proj_head_mode: str = "nonlinear"
    proj_out_dim: int = 128
    num_proj_layers: int = 3
    ft_proj_selector: int = 0
    # Augmentation (pretraining).
    color_jitter_strength: float = 1.0
    color_jitter_impl: str = "v2"
    use_blur: bool = True
    jit_augment: bool = True
    # Pretraining probe and fine-tuning.
    lineareval_while_pretraining: bool = True
    checkpoint: Optional[str] = None
    hub_module: Optional[str] = None
    zero_init_logits_layer: bool = False
    fine_tune_after_block: int = -1
    linear_eval: bool = False
    # Distribution.
    strategy: str = "auto"
    precision: str = "float32"
    jit_compile: bool = False
    matmul_small_convs: bool = True
    tpu_name: Optional[str] = None
    tpu_zone: Optional[str] = None
    gcp_project: Optional[str] = None
    master: Optional[str] = None
    use_tpu: bool = False
    eval_name: Optional[str] = None

    def __post_init__(self):
        if self.linear_eval:
            # The paper's linear evaluation: a linear classifier on the frozen encoder.
            self.fine_tune_after_block = 4
        if self.use_tpu and self.strategy == "auto":
            self.strategy = "tpu"

    def validate(self) -> "Config":
        """Raises ValueError naming the first bad value and what would be accepted."""
        _choice("train_mode", self.train_mode, TRAIN_MODES)
        _choice("mode", self.mode, MODES)
        _choice("optimizer", self.optimizer, optim.OPTIMIZERS)
        _choice("learning_rate_scaling", self.learning_rate_scaling, optim.LR_SCALINGS)
        _choice("proj_head_mode", self.proj_head_mode, heads.PROJ_HEAD_MODES)
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("precision", self.precision, PRECISIONS)
        _choice("color_jitter_impl", self.color_jitter_impl, COLOR_JITTER_IMPLS)
        _choice("on_nonfinite", self.on_nonfinite, ON_NONFINITE)
        _choice("resnet_depth", self.resnet_depth, tuple(resnet.DEPTHS))
        for name in ("train_batch_size", "eval_batch_size", "image_size", "proj_out_dim"):
            _at_least(name, getattr(self, name), 1)
        for name in ("train_steps", "eval_steps", "checkpoint_steps", "steps_per_loop",
                     "weight_decay", "warmup_epochs", "momentum", "keep_hub_module_max"):
            _at_least(name, getattr(self, name), 0)
        _at_least("keep_checkpoint_max", self.keep_checkpoint_max, 1)
        _at_least("num_proj_layers", self.num_proj_layers, 1)
        _positive("temperature", self.temperature)
        _positive("learning_rate", self.learning_rate)
        _positive("width_multiplier", self.width_multiplier)
        if self.train_steps == 0:
            _positive("train_epochs", self.train_epochs)
        if self.checkpoint_steps == 0:
            _positive("checkpoint_epochs", self.checkpoint_epochs)
        if not 0.0 <= self.color_jitter_strength <= 1.25:
            raise ValueError(f"--color_jitter_strength={self.color_jitter_strength} must be in "
                             "[0, 1.25] (contrast and saturation need 1 - 0.8 s >= 0).")
        if not 0.0 <= self.sk_ratio < 1.0:
            raise ValueError(f"--sk_ratio={self.sk_ratio} must be in [0, 1) (0.0625 in "
                             "SimCLRv2; 0 disables selective kernels).")
        if not 0.0 <= self.se_ratio < 1.0:
            raise ValueError(f"--se_ratio={self.se_ratio} must be in [0, 1) (0 disables "
                             "squeeze-and-excitation).")
        self.label_subset().validate()
        if self.label_subset().active and self.train_mode != "finetune":
            raise ValueError("--train_label_fraction, --train_examples_per_class and "
                             "--train_label_file choose the labelled examples of fine-tuning "
                             "(simclr-finetune); pretraining reads every image without labels.")
        if not 0.0 <= self.batch_norm_decay < 1.0:
            raise ValueError(f"--batch_norm_decay={self.batch_norm_decay} must be in [0, 1).")
        if self.fine_tune_after_block not in range(-1, 5):
            raise ValueError(f"--fine_tune_after_block={self.fine_tune_after_block} must be "
                             "-1 (train everything) or 0..4 (4 = linear evaluation).")
        if self.train_mode == "pretrain" and self.fine_tune_after_block != -1:
            raise ValueError(f"--fine_tune_after_block={self.fine_tune_after_block} (or "
                             "--linear_eval) applies to fine-tuning only; pretraining trains "
                             "the whole network.")
        if self.hub_module:
            if self.train_mode != "finetune":
                raise ValueError(f"--hub_module={self.hub_module!r} is for fine-tuning and "
                                 "linear evaluation (simclr-finetune).")
            if self.checkpoint:
                raise ValueError("give --hub_module or --checkpoint, not both: both say where "
                                 "the encoder comes from.")
            if self.fine_tune_after_block not in (-1, 4):
                raise ValueError(f"--fine_tune_after_block={self.fine_tune_after_block} cannot "
                                 "freeze part of an exported model; with --hub_module use -1 "
                                 "(fine-tune all of it) or 4 / --linear_eval (freeze it).")
            if self.ft_proj_selector != 0:
                raise ValueError(f"--ft_proj_selector={self.ft_proj_selector}: an exported "
                                 "model exposes the encoder output (final_avg_pool) for "
                                 "fine-tuning; use --ft_proj_selector=0 with --hub_module.")
        if self.strategy == "tpu" and not (self.tpu_name or self.master):
            raise ValueError("--strategy=tpu (or --use_tpu) needs --tpu_name=NAME (the TPU name, "
                             "'local' on a TPU VM) or --master=grpc://ADDRESS.")
        if not self.model_dir:
            raise ValueError("--model_dir is required: the folder for checkpoints, "
                             "summaries and summary.json.")
        return self

    def label_subset(self) -> subsets.LabelSubset:
        """The labelled examples of fine-tuning (``subsets.LabelSubset``)."""
        return subsets.LabelSubset(self.train_label_fraction, self.train_examples_per_class,
                                   self.train_label_file, self.seed)


def _choice(name, value, accepted):
    if value not in accepted:
        raise ValueError(f"--{name}={value!r} is not supported; use one of "
                         f"{', '.join(map(str, accepted))}.")


def _at_least(name, value, minimum):
    if value < minimum:
        raise ValueError(f"--{name}={value} must be >= {minimum}.")


def _positive(name, value):
    if not value > 0:
        raise ValueError(f"--{name}={value} must be > 0.")


def from_flagfile(path: str, train_mode: str = "pretrain", **overrides) -> Config:
    """The Config a program would run with ``--flagfile=path``, with ``overrides`` applied.

    For notebooks and scripts: ``from_flagfile("flags/smoke.flags", model_dir="/tmp/run")``.
    Nested ``--flagfile`` lines are read relative to the current directory, as absl does.
    """
    from absl import flags  # noqa: PLC0415 (keeps config importable without the CLI)

    from simclr_tf.cli import flags as cli_flags  # noqa: PLC0415

    if not os.path.exists(path):
        raise ValueError(f"flagfile {path!r} does not exist.")
    flag_values = flags.FlagValues()
    cli_flags.define_flags(flag_values=flag_values, train_mode=train_mode)
    flag_values(["simclr", f"--flagfile={path}"])
    return dataclasses.replace(cli_flags.config_from_flags(flag_values), **overrides)
