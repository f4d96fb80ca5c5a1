"""The absl flags of every program, defined from ``config.Config`` (one source of truth).

This package is the only place that reads FLAGS. Flag names are the original's where the
meaning is the same; enums are checked by absl at parse time, ranges by ``Config.validate``.
"""

import dataclasses
import os
import sys
import typing
from typing import Callable, Dict

from absl import app, flags, logging

from simclr_tf import config as config_lib
from simclr_tf import heads, optim
from simclr_tf.cli import quiet

FLAGS = flags.FLAGS

_ENUMS: Dict[str, tuple] = {
    "train_mode": config_lib.TRAIN_MODES,
    "mode": config_lib.MODES,
    "optimizer": optim.OPTIMIZERS,
    "learning_rate_scaling": optim.LR_SCALINGS,
    "proj_head_mode": heads.PROJ_HEAD_MODES,
    "strategy": config_lib.STRATEGIES,
    "precision": config_lib.PRECISIONS,
    "color_jitter_impl": config_lib.COLOR_JITTER_IMPLS,
    "on_nonfinite": config_lib.ON_NONFINITE,
}

_HELP = {
    "train_mode": "pretrain (contrastive) or finetune (supervised).",
    "mode": "train; eval (evaluate every new checkpoint of --model_dir as it appears, until "
            "the last step); or train_then_eval (the original's modes).",
    "folder_labels": "With --dataset=folder: the sub-folder names are the classes. "
                     "--nofolder_labels reads every image under --data_dir, at any depth, as "
                     "unlabelled (pretraining only). A folder with images directly in it is "
                     "unlabelled either way.",
    "train_label_fraction": "Fine-tune on a seeded, class-balanced fraction of the training "
                            "labels (0.01 = 1% of each class); 0 uses them all.",
    "train_examples_per_class": "Fine-tune on a seeded N examples of each class; 0 uses all.",
    "train_label_file": "Fine-tune on the training images listed in this text file, one file "
                        "name (or path relative to the data folder) per line, as the "
                        "original's imagenet_subsets/1percent.txt.",
    "se_ratio": "Squeeze-and-excitation ratio (0 disables): a squeeze-and-excitation layer "
                "ends every residual branch, as in the original.",
    "tpu_zone": "GCE zone of the TPU (passed to the TPU cluster resolver).",
    "gcp_project": "GCP project of the TPU (passed to the TPU cluster resolver).",
    "master": "TPU master address (grpc://...), used when --tpu_name is not given.",
    "eval_name": "Accepted for the original's commands; unused (as in the original).",
    "model_dir": "Folder for checkpoints, TensorBoard summaries, flags.txt and summary.json.",
    "seed": "Seed of the built-in dataset, the folder source's held-out split, and the "
            "training input's shuffle and augmentations (reruns see the same batches).",
    "dataset": "'shapes' (built in, no download), 'folder' (an image folder given by "
               "--data_dir) or a TFDS name (cifar10, imagenet2012_subset/1pct, ...).",
    "data_dir": "TFDS data_dir, or the image folder for --dataset=folder.",
    "train_split": "Split to train on.",
    "eval_split": "Split to evaluate on (CIFAR-10: test).",
    "cache_dataset": "Cache the decoded images in memory (not for ImageNet).",
    "image_size": "Input size S; <= 32 uses the CIFAR stem and no eval centre crop.",
    "train_batch_size": "Global training batch (images; each gives 2 views in pretraining).",
    "eval_batch_size": "Global evaluation batch.",
    "train_epochs": "Training length in epochs, used when --train_steps=0.",
    "train_steps": "Training length in steps; > 0 overrides --train_epochs. Runs stop exactly "
                   "here.",
    "eval_steps": "Evaluation steps; 0 evaluates the whole split.",
    "warmup_epochs": "Linear warm-up length in epochs.",
    "checkpoint_epochs": "Epochs between checkpoints and evaluations (if --checkpoint_steps=0).",
    "checkpoint_steps": "Steps between checkpoints and evaluations; > 0 overrides epochs.",
    "steps_per_loop": "Steps run inside one tf.function between progress lines and summaries; "
                      "0 = the checkpoint interval.",
    "keep_checkpoint_max": "Number of complete checkpoints kept.",
    "deterministic": "Op determinism, seeded initial weights and the input position saved in "
                     "every checkpoint: a resumed run ends with the weights of an "
                     "uninterrupted one (bit-identical on a CPU).",
    "on_nonfinite": "On a NaN or infinite loss: stop (naming the step, the loss and the last "
                    "good checkpoint) or rollback (restore it, skip the batches since, go on; "
                    "give up after 3 rollbacks in a row).",
    "keep_hub_module_max": "Number of exported SavedModels kept.",
    "optimizer": "lars, momentum (Nesterov SGD) or adam.",
    "learning_rate": "Base learning rate, scaled by --learning_rate_scaling.",
    "learning_rate_scaling": "linear: lr * B / 256; sqrt: lr * sqrt(B).",
    "momentum": "Momentum of LARS and of Nesterov SGD.",
    "weight_decay": "L2 weight decay (inside LARS; added to the loss otherwise).",
    "batch_norm_decay": "Batch norm moving-average decay.",
    "temperature": "NT-Xent temperature.",
    "hidden_norm": "L2-normalise projections in NT-Xent.",
    "resnet_depth": "ResNet depth: 18, 34, 50, 101, 152 or 200.",
    "width_multiplier": "ResNet width multiplier (0.25 and 0.5 allowed for small models).",
    "sk_ratio": "Selective-kernel ratio (SimCLRv2: 0.0625); 0 disables.",
    "global_bn": "Batch norm statistics over all replicas.",
    "proj_head_mode": "Projection head: none, linear or nonlinear.",
    "proj_out_dim": "Output dimension of the projection head.",
    "num_proj_layers": "Layers of the nonlinear projection head (v2: 3, v1: 2).",
    "ft_proj_selector": "Projection-head layer that feeds the linear head (0 = encoder output, "
                        "1 = after the first layer, -1 = last).",
    "color_jitter_strength": "Colour distortion strength s (0.5 for CIFAR-10).",
    "color_jitter_impl": "v2 (multiplicative brightness) or v1 (additive).",
    "use_blur": "Gaussian blur (on device, per image) in pretraining.",
    "jit_augment": "Compile the colour-distortion ops of the input pipeline with XLA (about "
                   "1.7x the views/s at 224 px; values within 1e-6 of TF's kernels); "
                   "--nojit_augment uses TF's kernels.",
    "lineareval_while_pretraining": "Train a linear probe on stop-gradient features while "
                                    "pretraining (reports top-1 during pretraining).",
    "checkpoint": "Checkpoint (a run's model_dir or a prefix) to fine-tune from; only its "
                  "encoder and projection head are loaded.",
    "hub_module": "An exported SavedModel (model_dir/saved_model/<step> or simclr-export's) "
                  "to fine-tune or linear-evaluate instead of a checkpoint.",
    "zero_init_logits_layer": "Start the linear head from zeros.",
    "fine_tune_after_block": "-1 trains everything; 0..3 freezes the stem and block groups up "
                             "to that index; 4 freezes the encoder (linear evaluation).",
    "linear_eval": "Linear evaluation: the same as --fine_tune_after_block=4.",
    "strategy": "auto, default, mirrored, multi_worker or tpu.",
    "precision": "float32, mixed_float16 (with loss scaling) or mixed_bfloat16 (TPUs); the "
                 "loss, NT-Xent's softmax and batch-norm statistics stay float32.",
    "jit_compile": "Compile the replica step with XLA (TPUs always do).",
    "matmul_small_convs": "On a CPU, run float32 3x3 convolutions with at most 4x4 outputs "
                          "(7x7 when strided) as one matmul over their patches (about 1.3x "
                          "on those layers; the same function up to float rounding). "
                          "Exports always use TF's convolutions.",
    "tpu_name": "TPU name or address for --strategy=tpu ('local' on a TPU VM).",
    "use_tpu": "The original's spelling of --strategy=tpu.",
}


# --help lists the flags in these groups (every Config field is in exactly one).
GROUPS: Dict[str, tuple] = {
    "run": ("model_dir", "train_mode", "mode", "seed"),
    "data": ("dataset", "data_dir", "folder_labels", "train_split", "eval_split",
             "cache_dataset", "image_size", "train_label_fraction", "train_examples_per_class",
             "train_label_file", "color_jitter_strength", "color_jitter_impl", "use_blur",
             "jit_augment"),
    "model": ("resnet_depth", "width_multiplier", "sk_ratio", "se_ratio", "global_bn",
              "batch_norm_decay", "proj_head_mode", "proj_out_dim", "num_proj_layers",
              "ft_proj_selector"),
    "optimisation": ("train_batch_size", "train_epochs", "train_steps", "warmup_epochs",
                     "optimizer", "learning_rate", "learning_rate_scaling", "momentum",
                     "weight_decay", "temperature", "hidden_norm"),
    "evaluation and fine-tuning": (
        "lineareval_while_pretraining", "checkpoint", "hub_module", "linear_eval",
        "fine_tune_after_block", "zero_init_logits_layer", "eval_batch_size", "eval_steps",
        "eval_name"),
    "distribution": ("strategy", "precision", "jit_compile", "matmul_small_convs", "tpu_name",
                     "tpu_zone", "gcp_project", "master", "use_tpu"),
    "reliability": ("checkpoint_epochs", "checkpoint_steps", "steps_per_loop",
                    "keep_checkpoint_max", "keep_hub_module_max", "on_nonfinite",
                    "deterministic"),
}
REQUIRED = ("model_dir",)
# Flags of the original's commands that do nothing here: accepted with a one-line notice.
IGNORED = {
    "train_summary_steps": "the original TF1 flag --train_summary_steps is accepted and "
                           "ignored (the TF2 code never defined it); summaries are written "
                           "every --steps_per_loop steps.",
    "variable_schema": "the original TF1 flag --variable_schema is accepted and ignored: "
                       "fine-tuning restores the encoder and projection head, never the "
                       "optimizer, the step or the supervised head.",
}


def _base_type(annotation):
    if typing.get_origin(annotation) is typing.Union:  # Optional[X]
        return next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def define_flags(flag_values: flags.FlagValues = FLAGS, **defaults):
    """Defines one flag per Config field; ``defaults`` overrides a program's defaults."""
    fv = dict(flag_values=flag_values)
    hints = typing.get_type_hints(config_lib.Config)
    for field in dataclasses.fields(config_lib.Config):
        name, default = field.name, defaults.get(field.name, field.default)
        kind = _base_type(hints[name])
        if name in _ENUMS:
            flags.DEFINE_enum(name, default, list(_ENUMS[name]), _HELP[name], **fv)
        elif kind is bool:
            flags.DEFINE_bool(name, default, _HELP[name], **fv)
        elif kind is int:
            flags.DEFINE_integer(name, default, _HELP[name], **fv)
        elif kind is float:
            flags.DEFINE_float(name, default, _HELP[name], **fv)
        else:
            flags.DEFINE_string(name, default, _HELP[name], **fv)
    # Short spelling used by Cloud TPU docs and Model Garden.
    flags.DEFINE_alias("tpu", "tpu_name", **fv)
    flags.DEFINE_string("train_summary_steps", None, IGNORED["train_summary_steps"], **fv)
    flags.DEFINE_string("variable_schema", None, IGNORED["variable_schema"], **fv)


def help_text(prog: str, doc: str, flag_values: flags.FlagValues = FLAGS,
              extra: tuple = ()) -> str:
    """``--help``: what the program does, then its own flags by group, defaults shown."""
    def line(name):
        flag = flag_values[name]
        default = "" if flag.default is None else f" (default: {flag.default_as_str})"
        return f"  --{name}{default}\n      {flag.help}"

    lines = [(doc or prog).strip(), "",
             f"usage: {prog} --model_dir=DIR [--flagfile=FILE] [--flag=value ...]", ""]
    lines += ["required:"] + [line(n) for n in REQUIRED if n in flag_values] + [""]
    if extra:
        lines += [f"{prog}:"] + [line(n) for n in extra] + [""]
    for group, names in GROUPS.items():
        rest = [n for n in names if n not in REQUIRED]
        lines += [f"{group}:"] + [line(n) for n in rest] + [""]
    lines += ["Booleans: --name / --noname. Flags given after --flagfile=FILE override it. "
              "--verbosity=0 shows the INFO log and TensorFlow's native log lines; "
              "--helpfull lists absl's own flags too."]
    return "\n".join(lines)


def explicit_flags(argv, flag_values: flags.FlagValues = FLAGS) -> set:
    """The flag names given on the command line itself (not inside a --flagfile)."""
    known = {f.name for f in dataclasses.fields(config_lib.Config)} | set(flag_values)
    names = set()
    for arg in argv[1:]:
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0]
            names.add(name[2:] if name.startswith("no") and name[2:] in known else name)
    return names


def config_from_flags(flag_values: flags.FlagValues = FLAGS, **overrides
                      ) -> config_lib.Config:
    """The Config of the parsed flags."""
    values = {f.name: flag_values[f.name].value for f in dataclasses.fields(config_lib.Config)}
    values.update(overrides)
    return config_lib.Config(**values)


def write_flagfile(cfg: config_lib.Config, path: str):
    """Writes the resolved values as a flagfile that re-runs the same job."""
    import tensorflow as tf  # late: keep --help fast

    lines = [f"# {os.path.basename(sys.argv[0])} resolved flags; re-run with --flagfile=this"]
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        lines.append(f"--{field.name}={value}")
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    tf.io.gfile.rename(tmp, path, overwrite=True)


def run_program(main: Callable[[config_lib.Config, set], None], prog: str, doc: str = "",
                extra: tuple = (), reads_run: bool = False):
    """Runs ``main(cfg, explicit)`` under absl (``explicit``: the flags given on the command
    line itself); a bad value ends with one clear line and exit code 2.

    ``reads_run`` (simclr-eval, simclr-export): without a --flagfile, the settings of the run
    in --model_dir (its flags.txt) are read first, and the command line overrides them.
    """
    explicit: set = set()

    def _main(argv):
        if not FLAGS["verbosity"].present:
            # absl logs INFO by default under app.run; the progress line is the console's
            # report. --verbosity=0 brings the INFO log and TF's native log lines back.
            logging.set_verbosity(logging.WARNING)
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        for name, notice in IGNORED.items():
            if FLAGS[name].present:
                print(f"{prog}: note: {notice}", flush=True)
        try:
            main(config_from_flags(), explicit)
        except ValueError as e:
            sys.stderr.write(f"{prog}: error: {e}\n")
            sys.exit(2)

    def _parse(argv):
        if any(a in ("--help", "-h", "--helpshort", "-?") for a in argv[1:]):
            print(help_text(prog, doc, FLAGS, extra))
            sys.exit(0)
        explicit.update(explicit_flags(argv))
        if not {"verbosity", "v"} & explicit:
            quiet.filter_native_stderr()
        try:
            rest = FLAGS(argv)
            run_flags = _run_flagfile(argv) if reads_run else None
            if run_flags:
                FLAGS.unparse_flags()
                rest = FLAGS([argv[0], f"--flagfile={run_flags}", *argv[1:]])
                print(f"{prog}: using the run's settings in {run_flags} (flags on the command "
                      "line take precedence)", flush=True)
            return rest
        except flags.Error as e:  # unknown flag, bad enum value, missing flagfile, ...
            sys.stderr.write(f"{prog}: error: {e}\n")
            sys.exit(2)

    app.run(_main, flags_parser=_parse)


def _run_flagfile(argv) -> str:
    """model_dir/flags.txt when the command line names a run but no flagfile, else ""."""
    if any(a.startswith(("--flagfile", "-flagfile")) for a in argv[1:]) or not FLAGS.model_dir:
        return ""
    path = os.path.join(FLAGS.model_dir, "flags.txt")
    return path if os.path.exists(path) else ""
