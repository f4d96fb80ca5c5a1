"""The typed configuration of the training programs, with validation at the boundary.

Field names are the original's flag names wherever a flag means the same thing (docs/method.md).
Deliberate differences: ``use_tpu`` defaults to False and ``strategy='auto'`` picks what the
machine has; ``dataset`` defaults to the built-in ``shapes`` set; ``global_bn`` defaults to
True as in the original.

Each field carries its help text (and its accepted values, ``choices``) in its metadata; the
command-line programs build their flags from them (``simclr_tf.cli.flags``). This module
imports no TensorFlow: a run is validated before TensorFlow loads.
"""

import dataclasses
from typing import Optional

from simclr_tf.core import choices, parts


def _field(default, help_text: str, **metadata):
    """A Config field: its default, its ``--help`` text and e.g. ``choices``."""
    return dataclasses.field(default=default, metadata={"help": help_text, **metadata})


@dataclasses.dataclass(frozen=True)
class LabelSubset:
    """How to choose the labelled examples of the training split (all of them by default).

    ``label_subsets.apply`` reads them from a source."""

    fraction: float = 0.0
    per_class: int = 0
    name_file: Optional[str] = None
    seed: int = 0

    @property
    def active(self) -> bool:
        return bool(self.fraction or self.per_class or self.name_file)

    def validate(self) -> "LabelSubset":
        """Raises ValueError naming a value outside what is accepted."""
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"--train_label_fraction={self.fraction} must be in (0, 1] "
                             "(e.g. 0.01 for 1% of the labels; 0 uses them all).")
        if self.per_class < 0:
            raise ValueError(f"--train_examples_per_class={self.per_class} must be >= 1 "
                             "(0 uses every example).")
        given = [n for n, v in (("--train_label_fraction", self.fraction),
                                ("--train_examples_per_class", self.per_class),
                                ("--train_label_file", self.name_file)) if v]
        if len(given) > 1:
            raise ValueError(f"give one of {', '.join(given)}: each chooses the labelled "
                             "examples.")
        return self


@dataclasses.dataclass
class Config:
    """Everything a pretraining, fine-tuning or evaluation run needs."""

    # What to run and where.
    train_mode: str = _field("pretrain", "pretrain (contrastive), finetune (supervised) or "
                             "distill (a student learns a teacher's predictions).",
                             choices=choices.TRAIN_MODES)
    mode: str = _field(
        "train", "train; eval (evaluate every new checkpoint of --model_dir as it appears, "
        "until the last step); or train_then_eval (the original's modes).",
        choices=choices.MODES)
    model_dir: Optional[str] = _field(
        None, "Folder for checkpoints, TensorBoard summaries, flags.txt and summary.json.")
    seed: int = _field(0, "Seed of the built-in dataset, the folder source's held-out split, "
                       "and the training input's shuffle and augmentations (reruns see the "
                       "same batches).")
    # Data.
    dataset: str = _field("shapes", "'shapes' (built in, no download), 'folder' (an image "
                          "folder given by --data_dir) or a TFDS name (cifar10, "
                          "imagenet2012_subset/1pct, ...).")
    data_dir: Optional[str] = _field(None, "TFDS data_dir, or the image folder for "
                                     "--dataset=folder.")
    train_split: str = _field("train", "Split to train on.")
    eval_split: str = _field("validation", "Split to evaluate on (CIFAR-10: test).")
    cache_dataset: bool = _field(False, "Cache the decoded images in memory (not for "
                                 "ImageNet).")
    folder_labels: bool = _field(
        True, "With --dataset=folder: the sub-folder names are the classes. --nofolder_labels "
        "reads every image under --data_dir, at any depth, as unlabelled (pretraining only). "
        "A folder with images directly in it is unlabelled either way.")
    train_label_fraction: float = _field(
        0.0, "Fine-tune on a seeded, class-balanced fraction of the training labels (0.01 = "
        "1% of each class); 0 uses them all.")
    train_examples_per_class: int = _field(
        0, "Fine-tune on a seeded N examples of each class; 0 uses all.")
    train_label_file: Optional[str] = _field(
        None, "Fine-tune on the training images listed in this text file, one file name (or "
        "path relative to the data folder) per line, as the original's "
        "imagenet_subsets/1percent.txt.")
    image_size: int = _field(224, "Input size S; <= 32 uses the CIFAR stem and no eval centre "
                             "crop.")
    # Durations (steps win over epochs when > 0).
    train_batch_size: int = _field(512, "Global training batch (images; each gives 2 views in "
                                   "pretraining).")
    embedding_chunks: int = _field(
        1, "Pretraining: each replica's share of the batch goes through the encoder and head "
        "in K chunks, twice (gradient caching: the loss and its gradient over the whole batch, "
        "the activations of one chunk in memory at a time); the same NT-Xent over all the "
        "batch's negatives as K=1, for one more forward pass (1.4-1.7x the step's time on a "
        "CPU at K=2-4). Batch norm then normalises "
        "each chunk on its own (as K replicas without --global_bn would; with it, a chunk "
        "across the replicas) and its moving statistics take one update per chunk. "
        "docs/scaling.md: which K for a batch and a memory.")
    eval_batch_size: int = _field(256, "Global evaluation batch.")
    train_epochs: float = _field(100, "Training length in epochs, used when --train_steps=0.")
    train_steps: int = _field(0, "Training length in steps; > 0 overrides --train_epochs. Runs "
                              "stop exactly here.")
    eval_steps: int = _field(0, "Evaluation steps; 0 evaluates the whole split.")
    warmup_epochs: float = _field(10, "Linear warm-up length in epochs.")
    checkpoint_epochs: float = _field(1, "Epochs between checkpoints and evaluations (if "
                                      "--checkpoint_steps=0).")
    checkpoint_steps: int = _field(0, "Steps between checkpoints and evaluations; > 0 "
                                   "overrides epochs.")
    steps_per_loop: int = _field(0, "Steps run inside one tf.function between progress lines "
                                 "and summaries; 0 = the checkpoint interval.")
    on_nonfinite: str = _field(
        "stop", "On a NaN or infinite loss: stop (naming the step, the loss and the last good "
        "checkpoint) or rollback (restore it, skip the batches since, go on; give up after 3 "
        "rollbacks in a row).", choices=choices.ON_NONFINITE)
    deterministic: bool = _field(
        False, "Op determinism, seeded initial weights and the input position saved in every "
        "checkpoint: a resumed run ends with the weights of an uninterrupted one "
        "(bit-identical on a CPU); the kernels are the fixed choice, not measured "
        "(--calibrate_kernels), so every run on a machine gives the same figures.")
    keep_checkpoint_max: int = _field(5, "Number of complete checkpoints kept.")
    keep_hub_module_max: int = _field(1, "Number of exported SavedModels kept.")
    # Optimisation.
    optimizer: str = _field("lars", "lars, momentum (Nesterov SGD) or adam.",
                            choices=choices.OPTIMIZERS)
    learning_rate: float = _field(0.3, "Base learning rate, scaled by "
                                  "--learning_rate_scaling.")
    learning_rate_scaling: str = _field("linear", "linear: lr * B / 256; sqrt: lr * sqrt(B).",
                                        choices=choices.LR_SCALINGS)
    momentum: float = _field(0.9, "Momentum of LARS and of Nesterov SGD.")
    weight_decay: float = _field(1e-6, "L2 weight decay (inside LARS; added to the loss "
                                 "otherwise).")
    batch_norm_decay: float = _field(0.9, "Batch norm moving-average decay.")
    loss: str = _field(
        "nt_xent", f"The contrastive loss: {', '.join(parts.built_in('loss'))} (a module of "
        "simclr_tf/losses each; the first three are the paper's table 2), one registered from "
        "Python, or a module path my_project.my_loss (docs/extending.md). The flags after it "
        "are the options of these losses.")
    # Model.
    resnet_depth: int = _field(50, "ResNet depth: 18, 34, 50, 101, 152 or 200.",
                               choices=choices.RESNET_DEPTHS)
    width_multiplier: float = _field(1.0, "ResNet width multiplier (0.25 and 0.5 allowed for "
                                     "small models).")
    sk_ratio: float = _field(0.0, "Selective-kernel ratio (SimCLRv2: 0.0625); 0 disables.")
    se_ratio: float = _field(0.0, "Squeeze-and-excitation ratio (0 disables): a "
                             "squeeze-and-excitation layer ends every residual branch, as in "
                             "the original.")
    global_bn: bool = _field(True, "Batch norm statistics over all replicas.")
    proj_head_mode: str = _field("nonlinear", "Projection head: none, linear or nonlinear.",
                                 choices=choices.PROJ_HEAD_MODES)
    proj_out_dim: int = _field(128, "Output dimension of the projection head.")
    num_proj_layers: int = _field(3, "Layers of the nonlinear projection head (v2: 3, v1: 2).")
    ft_proj_selector: int = _field(0, "Projection-head layer that feeds the linear head (0 = "
                                   "encoder output, 1 = after the first layer, -1 = last).")
    # Augmentation (pretraining).
    color_jitter_strength: float = _field(1.0, "Colour distortion strength s (0.5 for "
                                          "CIFAR-10).")
    color_jitter_impl: str = _field("v2", "v2 (multiplicative brightness) or v1 (additive).",
                                    choices=choices.COLOR_JITTER_IMPLS)
    use_blur: bool = _field(True, "Gaussian blur (on device, per image) in pretraining's "
                            "standard views (with --augmentations, list 'blur' instead).")
    augmentations: str = _field(
        "", "Replace SimCLR's standard views by these transformations, applied in order to "
        "both views (and to fine-tuning's view): a comma-separated list of crop, cutout, "
        "color, sobel, noise, blur, rotate (docs/ablations.md defines each). Empty: crop + "
        "flip, colour distortion and --use_blur.")
    augment_one_view: bool = _field(
        False, "With --augmentations: one random crop shared by the two views, and the "
        "transformations applied to the second view only (the paper's figure-5 setting).")
    jit_augment: bool = _field(
        True, "Compile the colour-distortion ops of the input pipeline with XLA (faster; "
        "values within 1e-6 of TF's kernels); --nojit_augment uses TF's kernels.")
    # Pretraining probe and fine-tuning.
    lineareval_while_pretraining: bool = _field(
        True, "Train a linear probe on stop-gradient features while pretraining (reports "
        "top-1 during pretraining).")
    evaluators: str = _field(
        "probe,knn", "What a run evaluates at every checkpoint interval and at its end, "
        f"comma-separated: {', '.join(parts.built_in('evaluator'))} (a module of "
        "simclr_tf/evaluators each; docs/monitoring.md says what each reports), one "
        "registered from Python, or a module path "
        "my_project.my_evaluator (docs/extending.md). Each reports into TensorBoard "
        "(model_dir/eval), the eval line and summary.json; one that does not apply to a run "
        "(knn while fine-tuning) is skipped. The flags after it are their options.")
    views_summary: bool = _field(
        True, "Pretraining: a grid of augmented view pairs of 8 training images in TensorBoard "
        "(model_dir/train, augmented_views) at step 0 (a few seconds of start-up on a CPU: "
        "docs/monitoring.md).")
    checkpoint: Optional[str] = _field(
        None, "Checkpoint (a run's model_dir or a prefix) to fine-tune from; only its encoder "
        "and projection head are loaded.")
    hub_module: Optional[str] = _field(
        None, "An exported SavedModel (model_dir/saved_model/<step> or simclr-export's) to "
        "fine-tune or linear-evaluate instead of a checkpoint.")
    zero_init_logits_layer: bool = _field(False, "Start the linear head from zeros.")
    # Distillation (simclr-distill).
    teacher: Optional[str] = _field(
        None, "simclr-distill: the fixed teacher, an export (a folder with saved_model.pb, of "
        "simclr-finetune or simclr-convert), a fine-tuning run's folder or a checkpoint.")
    distill_temperature: float = _field(
        1.0, "tau of the teacher's and the student's softmax in the distillation loss (the "
        "SimCLRv2 paper: 1 from big to small, 0.1 for self-distillation).")
    distill_weight: float = _field(
        1.0, "a in (1 - a) x the labels' cross-entropy + a x the distillation loss; 1 (the "
        "paper's headline setting) uses no labels, below 1 the labelled subset's labels "
        "(--train_label_fraction, ...; all of them when none is given).")
    fine_tune_after_block: int = _field(
        -1, "-1 trains everything; 0..3 freezes the stem and block groups up to that index; 4 "
        "freezes the encoder (linear evaluation).")
    linear_eval: bool = _field(False, "Linear evaluation: the same as "
                               "--fine_tune_after_block=4.")
    # Distribution.
    strategy: str = _field("auto", "auto, default, mirrored, multi_worker or tpu.",
                           choices=choices.STRATEGIES)
    precision: str = _field(
        "float32", "float32, mixed_float16 (with loss scaling) or mixed_bfloat16 (TPUs); the "
        "loss, NT-Xent's softmax and batch-norm statistics stay float32.",
        choices=choices.PRECISIONS)
    jit_compile: bool = _field(False, "Compile the replica step with XLA (TPUs always do).")
    matmul_small_convs: bool = _field(
        True, "On a CPU, run float32 3x3 convolutions with few outputs as one matmul over "
        "their patches where that is faster (the same function up to float rounding; "
        "--nomatmul_small_convs: TF's kernels everywhere). Exports always use TF's.")
    calibrate_kernels: bool = _field(
        True, "On a CPU in float32, measure once per layer shape which way is faster on this "
        "machine: each small convolution (up to 8x8 outputs) as a matmul or TF's kernel, each "
        "training batch norm on sums + a depthwise convolution or oneDNN's kernel; kept in "
        "~/.cache/simclr_tf/kernel_choices.json ($SIMCLR_TF_CACHE_DIR). false, and always with "
        "--deterministic: TF's batch norm, and the matmul at fixed sizes (4x4 outputs, 7x7 "
        "strided; an AVX-512 Xeon's).")
    tpu_name: Optional[str] = _field(None, "TPU name or address for --strategy=tpu ('local' "
                                     "on a TPU VM).")
    tpu_zone: Optional[str] = _field(None, "GCE zone of the TPU (passed to the TPU cluster "
                                     "resolver).")
    gcp_project: Optional[str] = _field(None, "GCP project of the TPU (passed to the TPU "
                                        "cluster resolver).")
    master: Optional[str] = _field(None, "TPU master address (grpc://...), used when "
                                   "--tpu_name is not given.")
    use_tpu: bool = _field(False, "The original's spelling of --strategy=tpu.")
    eval_name: Optional[str] = _field(None, "Accepted for the original's commands; unused (as "
                                      "in the original).")

    @property
    def effective_fine_tune_after_block(self) -> int:
        """``fine_tune_after_block``, or 4 with ``linear_eval`` (the paper's linear evaluation:
        a linear classifier on the frozen encoder)."""
        return 4 if self.linear_eval else self.fine_tune_after_block

    @property
    def strategy_name(self) -> str:
        """``strategy``, or ``tpu`` when it is ``auto`` and ``use_tpu`` (the original's
        spelling) is set."""
        return "tpu" if self.use_tpu and self.strategy == "auto" else self.strategy

    @property
    def device_blur(self) -> bool:
        """Pretraining's standard views get the step's on-device blur."""
        return self.train_mode == "pretrain" and self.use_blur and not self.augmentations

    def label_subset(self) -> LabelSubset:
        """The labelled examples of fine-tuning."""
        return LabelSubset(self.train_label_fraction, self.train_examples_per_class,
                           self.train_label_file, self.seed)

    def validate(self) -> "Config":
        """Raises ValueError naming the first bad value and what would be accepted."""
        for field in dataclasses.fields(self):
            if "choices" in field.metadata:
                choices.check_choice(field.name, getattr(self, field.name),
                                     field.metadata["choices"])
        self._validate_ranges()
        self.label_subset().validate()
        if self.label_subset().active and self.train_mode == "pretrain":
            raise ValueError("--train_label_fraction, --train_examples_per_class and "
                             "--train_label_file choose the labelled examples of fine-tuning "
                             "(simclr-finetune); pretraining reads every image without labels.")
        self._validate_fine_tuning()
        self._validate_distillation()
        choices.check_tpu_address(self.strategy_name, self.tpu_name, self.master)
        if not self.model_dir:
            raise ValueError("--model_dir is required: the folder for checkpoints, "
                             "summaries and summary.json.")
        return self

    def _validate_ranges(self):
        for name in ("train_batch_size", "eval_batch_size", "image_size", "proj_out_dim"):
            choices.check_at_least(name, getattr(self, name), 1)
        for name in ("train_steps", "eval_steps", "checkpoint_steps",
                     "steps_per_loop", "weight_decay", "warmup_epochs", "momentum",
                     "keep_hub_module_max"):
            choices.check_at_least(name, getattr(self, name), 0)
        choices.check_at_least("keep_checkpoint_max", self.keep_checkpoint_max, 1)
        choices.check_at_least("num_proj_layers", self.num_proj_layers, 1)
        choices.check_at_least("embedding_chunks", self.embedding_chunks, 1)
        if self.embedding_chunks > 1 and self.train_mode != "pretrain":
            raise ValueError(f"--embedding_chunks={self.embedding_chunks} is for pretraining; "
                             f"--train_mode={self.train_mode} takes 1 (chunks serve the "
                             "contrastive loss, in which each view's term depends on the whole "
                             "batch).")
        for name in ("learning_rate", "width_multiplier"):
            choices.check_positive(name, getattr(self, name))
        if self.train_steps == 0:
            choices.check_positive("train_epochs", self.train_epochs)
        if self.checkpoint_steps == 0:
            choices.check_positive("checkpoint_epochs", self.checkpoint_epochs)
        if not 0.0 <= self.color_jitter_strength <= 1.25:
            raise ValueError(f"--color_jitter_strength={self.color_jitter_strength} must be in "
                             "[0, 1.25] (contrast and saturation need 1 - 0.8 s >= 0).")
        choices.check_sk_ratio(self.sk_ratio)
        choices.check_se_ratio(self.se_ratio)
        choices.parse_augmentations(self.augmentations)
        if self.augment_one_view and not self.augmentations:
            raise ValueError("--augment_one_view needs --augmentations=... (the "
                             "transformations of the second view).")
        for kind, spec in parts.KINDS.items():
            parts.check(kind, getattr(self, spec.flag),
                        {name: getattr(self, name) for name in parts.built_in_options(kind)})

    def _validate_distillation(self):
        if self.train_mode != "distill":
            if self.teacher:
                raise ValueError(f"--teacher={self.teacher!r} is for distillation "
                                 "(simclr-distill).")
            return
        if not self.teacher:
            raise ValueError("--teacher is required to distil: an export of a fine-tuned "
                             "model, a fine-tuning run's folder or a checkpoint.")
        choices.check_positive("distill_temperature", self.distill_temperature)
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ValueError(f"--distill_weight={self.distill_weight} must be in [0, 1] (1: "
                             "distillation alone; below 1 the labels' loss joins it).")
        if self.label_subset().active and self.distill_weight == 1.0:
            raise ValueError("a label subset (--train_label_fraction, ...) is used by the "
                             "labels' loss, which --distill_weight=1 leaves out; give "
                             "--distill_weight below 1, or no subset.")
        if self.checkpoint or self.hub_module:
            raise ValueError("the student starts from random initialisation (the SimCLRv2 "
                             "paper's); --checkpoint and --hub_module are not taken by "
                             "simclr-distill.")
        if self.effective_fine_tune_after_block != -1:
            raise ValueError("the student trains all of its layers: --fine_tune_after_block "
                             "and --linear_eval are not taken by simclr-distill.")

    def _validate_fine_tuning(self):
        if not 0.0 <= self.batch_norm_decay < 1.0:
            raise ValueError(f"--batch_norm_decay={self.batch_norm_decay} must be in [0, 1).")
        frozen = self.effective_fine_tune_after_block
        choices.check_fine_tune_after_block(frozen)
        choices.check_pretraining_trains_everything(frozen, self.train_mode)
        if not self.hub_module:
            return
        if self.train_mode != "finetune":
            raise ValueError(f"--hub_module={self.hub_module!r} is for fine-tuning and "
                             "linear evaluation (simclr-finetune).")
        if self.checkpoint:
            raise ValueError("give --hub_module or --checkpoint, not both: both say where "
                             "the encoder comes from.")
        if frozen not in (-1, 4):
            raise ValueError(f"--fine_tune_after_block={frozen} cannot freeze part of an "
                             "exported model; with --hub_module use -1 (fine-tune all of it) "
                             "or 4 / --linear_eval (freeze it).")
        if self.ft_proj_selector != 0:
            raise ValueError(f"--ft_proj_selector={self.ft_proj_selector}: an exported "
                             "model exposes the encoder output (final_avg_pool) for "
                             "fine-tuning; use --ft_proj_selector=0 with --hub_module.")


def _with_part_options(base: type) -> type:
    """``base`` with one more field per option the built-in parts declare (``core.parts``):
    ``Config(temperature=0.5)``, its flag and its flags.txt line, as for any other field."""
    fields = [(name, option.type, _field(option.default, option.help + _taken_by(kind, users)))
              for kind in parts.KINDS
              for name, (option, users) in parts.built_in_options(kind).items()]
    made = dataclasses.make_dataclass("Config", fields, bases=(base,))
    made.__module__, made.__doc__ = base.__module__, base.__doc__
    return made


def _taken_by(kind: str, users) -> str:
    every = parts.built_in(kind)
    if len(users) == len(every):
        return ""
    return f" (--{parts.KINDS[kind].flag}={', '.join(users)})"


Config = _with_part_options(Config)
