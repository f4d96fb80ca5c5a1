"""The absl flags of every program, defined from ``config.Config`` (one source of truth).

This package is the only place that reads FLAGS. Each flag is a Config field: its name, type,
default, help text and accepted values (the field's metadata). Flag names are the original's
where the meaning is the same; enums are checked by absl at parse time, ranges by
``Config.validate``.
"""

import dataclasses
import os
import sys
import typing
from typing import Callable, Dict

from absl import app, flags, logging

from simclr_tf.cli import quiet
from simclr_tf.core import config as config_lib
from simclr_tf.core import parts

FLAGS = flags.FLAGS

# --help lists the flags in these groups (every Config field is in exactly one).
GROUPS: Dict[str, tuple] = {
    "run": ("model_dir", "train_mode", "mode", "seed"),
    "data": ("dataset", "data_dir", "folder_labels", "train_split", "eval_split",
             "cache_dataset", "image_size", "train_label_fraction", "train_examples_per_class",
             "train_label_file", "color_jitter_strength", "color_jitter_impl", "use_blur",
             "augmentations", "augment_one_view", "jit_augment"),
    "model": ("resnet_depth", "width_multiplier", "sk_ratio", "se_ratio", "global_bn",
              "batch_norm_decay", "proj_head_mode", "proj_out_dim", "num_proj_layers",
              "ft_proj_selector"),
    "optimisation": ("train_batch_size", "embedding_chunks", "train_epochs", "train_steps",
                     "warmup_epochs", "optimizer", "learning_rate", "learning_rate_scaling",
                     "momentum", "weight_decay",
                     # --loss and the options of its parts (simclr_tf/losses)
                     "loss", *parts.built_in_options("loss")),
    "evaluation and fine-tuning": (
        "lineareval_while_pretraining", "views_summary", "checkpoint", "hub_module",
        "linear_eval", "fine_tune_after_block", "zero_init_logits_layer", "eval_batch_size",
        "eval_steps", "eval_name",
        # --evaluators and the options of its parts (simclr_tf/evaluators)
        "evaluators", *parts.built_in_options("evaluator")),
    "distillation": ("teacher", "distill_temperature", "distill_weight"),
    "distribution": ("strategy", "precision", "jit_compile", "matmul_small_convs",
                     "calibrate_kernels", "tpu_name",
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
        kind, help_text = _base_type(hints[name]), field.metadata["help"]
        accepted = field.metadata.get("choices")
        if accepted and kind is str:
            flags.DEFINE_enum(name, default, list(accepted), help_text, **fv)
        elif kind is bool:
            flags.DEFINE_bool(name, default, help_text, **fv)
        elif kind is int:
            flags.DEFINE_integer(name, default, help_text, **fv)
        elif kind is float:
            flags.DEFINE_float(name, default, help_text, **fv)
        else:
            flags.DEFINE_string(name, default, help_text, **fv)
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


def from_flagfile(path: str, train_mode: str = "pretrain", **overrides) -> config_lib.Config:
    """The Config a program would run with ``--flagfile=path``, with ``overrides`` applied.

    For notebooks and scripts: ``from_flagfile("flags/smoke.flags", model_dir="/tmp/run")``.
    Nested ``--flagfile`` lines are read relative to the current directory, as absl does.
    """
    if not os.path.exists(path):
        raise ValueError(f"flagfile {path!r} does not exist.")
    flag_values = flags.FlagValues()
    define_flags(flag_values=flag_values, train_mode=train_mode)
    flag_values(["simclr", f"--flagfile={path}"])
    return dataclasses.replace(config_from_flags(flag_values), **overrides)


# What simclr-finetune takes from the run of its --checkpoint when these flags are not given.
ARCHITECTURE = ("resnet_depth", "width_multiplier", "sk_ratio", "se_ratio", "image_size",
                "proj_head_mode", "num_proj_layers", "proj_out_dim")


def adopt_checkpoint_architecture(prog: str, explicit: set,
                                  flag_values: flags.FlagValues = FLAGS):
    """Sets the ARCHITECTURE flags not on the command line itself (``explicit``) to those of
    the run --checkpoint names (its flags.txt: a run of this project or a model
    simclr-convert made), so that the model built is the one the checkpoint holds: a
    recipe's --flagfile (e.g. flags/imagenet_linear_eval.flags, written for ResNet-50 1x)
    then fits any depth and width."""
    if not flag_values.checkpoint:
        return
    from simclr_tf.runs import run_folder  # late: keep --help fast (it imports TensorFlow)

    flagfile = run_folder.settings_file(flag_values.checkpoint)
    if not flagfile:
        return
    run = from_flagfile(flagfile, train_mode="finetune")
    taken = []
    for name in ARCHITECTURE:
        if name not in explicit and getattr(run, name) != flag_values[name].value:
            flag_values[name].value = getattr(run, name)
            taken.append(f"--{name}={getattr(run, name)}")
    if taken:
        print(f"{prog}: the architecture of the checkpoint's run ({flagfile}): "
              f"{' '.join(taken)} (flags on the command line take precedence)", flush=True)


def run_program(main: Callable[[config_lib.Config, set], None], prog: str, doc: str = "",
                extra: tuple = (), reads_run: bool = False, from_checkpoint_run: bool = False):
    """Runs ``main(cfg, explicit)`` under absl (``explicit``: the flags given on the command
    line itself); a bad value ends with one clear line and exit code 2.

    ``reads_run`` (simclr-eval, simclr-export): without a --flagfile, the settings of the run
    in --model_dir (its flags.txt) are read first, and the command line overrides them.
    ``from_checkpoint_run`` (simclr-finetune): see ``adopt_checkpoint_architecture``.
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
            if from_checkpoint_run:
                adopt_checkpoint_architecture(prog, explicit)
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
