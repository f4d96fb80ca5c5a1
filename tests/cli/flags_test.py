"""Every flagfile parses into a valid Config; flags.txt round-trips; the CLI fails clearly."""

import dataclasses
import glob
import os
import subprocess
import sys

import pytest
from absl import flags
from original_commands import ORIGINAL_FLAGS, README_CIFAR10, README_IMAGENET, argv_of

from simclr_tf.cli import flags as cli_flags
from simclr_tf.core.config import Config
from simclr_tf.runs import run_folder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLAGFILES = sorted(glob.glob(os.path.join(ROOT, "flags", "*.flags")))


def _parse(argv, train_mode="pretrain"):
    fv = flags.FlagValues()
    cli_flags.define_flags(flag_values=fv, train_mode=train_mode)
    fv(["prog", *argv])
    return cli_flags.config_from_flags(fv)


def test_the_paper_configurations_are_all_there():
    names = {os.path.basename(f) for f in FLAGFILES}
    assert {"smoke.flags", "demo.flags", "cifar10_pretrain.flags", "cifar10_linear_eval.flags",
            "cifar10_finetune.flags", "imagenet_pretrain.flags", "imagenet_linear_eval.flags",
            "imagenet_finetune_1pct.flags", "imagenet_finetune_10pct.flags"} <= names


@pytest.mark.parametrize("path", FLAGFILES, ids=os.path.basename)
def test_flagfile_parses_and_validates(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # nested --flagfile paths are relative to the repository
    mode = "finetune" if ("finetune" in path or "linear_eval" in path) else "pretrain"
    mode = "distill" if "distill" in path else mode
    teacher = ["--teacher=/t"] if mode == "distill" else []
    cfg = _parse([f"--flagfile={path}", "--model_dir=/tmp/x", *teacher], mode)
    cfg.validate()
    if "imagenet_distill" in path:  # the pretraining's schedule, 400 epochs, labels unused
        assert (cfg.train_mode, cfg.train_epochs, cfg.train_batch_size, cfg.learning_rate,
                cfg.weight_decay, cfg.distill_temperature, cfg.distill_weight) == (
                    "distill", 400, 4096, 0.075, 1e-4, 1.0, 1.0)
    for line in open(path):
        line = line.strip()
        if line.startswith("--"):
            # absl keeps a trailing comment in the value: comments go on their own lines.
            assert " #" not in line and "\t#" not in line, line
    if "imagenet_pretrain" in path:
        assert (cfg.train_batch_size, cfg.learning_rate, cfg.learning_rate_scaling,
                cfg.temperature, cfg.weight_decay, cfg.num_proj_layers) == (
                    4096, 0.075, "sqrt", 0.1, 1e-4, 3)
    if "cifar10_pretrain" in path:
        assert (cfg.train_batch_size, cfg.train_epochs, cfg.learning_rate, cfg.weight_decay,
                cfg.temperature, cfg.resnet_depth, cfg.image_size, cfg.color_jitter_strength,
                cfg.use_blur, cfg.eval_split) == (512, 1000, 1.0, 1e-4, 0.5, 18, 32, 0.5,
                                                  False, "test")
    if "linear_eval" in path:
        assert cfg.effective_fine_tune_after_block == 4 and cfg.optimizer == "momentum"
        assert cfg.learning_rate == 0.1 and cfg.warmup_epochs == 0
    if "imagenet_finetune_1pct" in path:
        assert (cfg.dataset, cfg.train_epochs, cfg.learning_rate, cfg.train_batch_size,
                cfg.ft_proj_selector) == ("imagenet2012_subset/1pct", 60, 0.005, 1024, 1)
    if "imagenet_finetune_10pct" in path:
        assert (cfg.dataset, cfg.train_epochs) == ("imagenet2012_subset/10pct", 30)


def test_resolved_flags_file_round_trips(tmp_path):
    cfg = Config(model_dir=str(tmp_path), train_mode="finetune", linear_eval=True,
                 learning_rate=0.125, dataset="folder", data_dir="/data/x y",
                 checkpoint="/runs/a", use_blur=False, width_multiplier=0.25)
    path = str(tmp_path / "flags.txt")
    run_folder.write_settings(cfg, path)
    again = _parse([f"--flagfile={path}"], "finetune")
    assert dataclasses.asdict(again) == dataclasses.asdict(cfg)
    # Read back without absl, as the library reads a run's settings (a teacher's, say).
    assert dataclasses.asdict(run_folder.read_settings(path)) == dataclasses.asdict(cfg)
    with open(path, "a") as f:
        f.write("--use_blur=maybe\n")
    with pytest.raises(ValueError, match=r"flags.txt, line \d+: 'maybe' is not true or false"):
        run_folder.read_settings(path)
    (tmp_path / "old.txt").write_text("--no_such_setting=1\n")
    with pytest.raises(ValueError, match="'--no_such_setting=1' is not a setting of a run"):
        run_folder.read_settings(str(tmp_path / "old.txt"))


def test_unknown_enum_value_is_rejected_by_name():
    with pytest.raises(flags.IllegalFlagValueError, match="proj_head_mode"):
        _parse(["--proj_head_mode=mlp"])


@pytest.mark.parametrize("argv,message", [
    (["--model_dir=/tmp/x", "--learning_rate=-1"], "--learning_rate=-1.0 must be > 0"),
    (["--resnet_depth=19", "--model_dir=/tmp/x"], "--resnet_depth=19 is not supported"),
    (["--fine_tune_after_block=2", "--model_dir=/tmp/x"], "applies to fine-tuning only"),
    ([], "--model_dir is required"),
])
def test_bad_values_end_with_one_clear_line(argv, message):
    proc = subprocess.run([sys.executable, "-m", "simclr_tf.cli.pretrain", *argv],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("simclr-pretrain: error:") and message in last, proc.stderr


def test_tpu_is_a_short_spelling_of_tpu_name():
    cfg = _parse(["--model_dir=/tmp/x", "--strategy=tpu", "--tpu=local"])
    assert cfg.tpu_name == "local" and cfg.strategy == "tpu"
    cfg.validate()


def test_every_flag_of_the_original_is_accepted():
    fv = flags.FlagValues()
    cli_flags.define_flags(flag_values=fv)
    assert len(ORIGINAL_FLAGS) == 48 and not [n for n in ORIGINAL_FLAGS if n not in fv]


def test_the_cifar10_flagfile_is_the_original_readme_recipe(monkeypatch):
    monkeypatch.chdir(ROOT)
    recipe = _parse(argv_of(README_CIFAR10))
    ours = _parse(["--flagfile=flags/cifar10_pretrain.flags", "--model_dir=/tmp/simclr_test"])
    departures = {"checkpoint_epochs", "use_tpu", "strategy"}  # stated in the flagfile
    differ = {f.name for f in dataclasses.fields(Config)
              if getattr(recipe, f.name) != getattr(ours, f.name)}
    assert differ <= departures, differ
    assert ours.num_proj_layers == 3


def test_the_original_readme_commands_parse_and_the_imagenet_one_reaches_the_tpu(tmp_path):
    cfg = _parse(argv_of(README_CIFAR10))
    assert (cfg.resnet_depth, cfg.image_size, cfg.use_blur, cfg.strategy) == (18, 32, False,
                                                                              "auto")
    argv = argv_of(README_IMAGENET, DATA_DIR=str(tmp_path / "tfds"), MODEL_DIR=str(tmp_path / "m"),
                   TPU_NAME="no-such-tpu")
    cfg = _parse(argv).validate()
    assert (cfg.strategy_name, cfg.tpu_name, cfg.train_batch_size) == ("tpu", "no-such-tpu",
                                                                       4096)
    proc = subprocess.run([sys.executable, "-m", "simclr_tf.cli.pretrain", *argv],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert "--train_summary_steps is accepted and ignored" in proc.stdout, proc.stdout
    assert proc.returncode == 2 and "cannot reach TPU 'no-such-tpu'" in proc.stderr, proc.stderr


def test_tpu_flags_reach_the_cluster_resolver(monkeypatch):
    import tensorflow as tf  # noqa: PLC0415

    from simclr_tf.runs import strategies  # noqa: PLC0415

    seen = []

    def resolver(**kwargs):
        seen.append(kwargs)
        raise ValueError("no TPU here")

    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", resolver)
    cfg = _parse(["--model_dir=/tmp/x", "--use_tpu", "--tpu_name=t1", "--tpu_zone=us-c1",
                  "--gcp_project=p"]).validate()
    with pytest.raises(ValueError, match="cannot reach TPU 't1'"):
        strategies.from_config(cfg)
    cfg = _parse(["--model_dir=/tmp/x", "--use_tpu", "--master=grpc://10.0.0.2:8470"])
    with pytest.raises(ValueError, match="grpc://10.0.0.2:8470"):
        strategies.from_config(cfg.validate())
    assert seen == [{"tpu": "t1", "zone": "us-c1", "project": "p"},
                    {"tpu": "grpc://10.0.0.2:8470", "zone": None, "project": None}]


def test_help_lists_the_programs_own_flags_in_groups():
    fv = flags.FlagValues()
    cli_flags.define_flags(flag_values=fv)
    text = cli_flags.help_text("simclr-pretrain", "simclr-pretrain: pretraining.", fv)
    grouped = [n for names in cli_flags.GROUPS.values() for n in names]
    fields = [f.name for f in dataclasses.fields(Config)]
    assert sorted(grouped) == sorted(fields)  # each field in exactly one group
    headers = [line for line in text.splitlines() if line.endswith(":") and
               not line.startswith(" ")]
    assert headers == ["required:", "run:", "data:", "model:", "optimisation:",
                       "evaluation and fine-tuning:", "distillation:", "distribution:",
                       "reliability:"]
    required = text.split("required:")[1].split("run:")[0]
    assert "--model_dir" in required
    assert sum(line.startswith("  --model_dir") for line in text.splitlines()) == 1
    assert all(f"--{name}" in text for name in fields)


def test_explicit_flags_are_those_on_the_command_line():
    assert cli_flags.explicit_flags(["p", "--flagfile=f", "--checkpoint=c", "--nouse_blur",
                                     "--model_dir", "m"]) == {
        "flagfile", "checkpoint", "use_blur", "model_dir"}


def test_config_imports_no_tensorflow():
    code = ("import sys, simclr_tf.core.config, simclr_tf.core.choices; "
            "assert 'tensorflow' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


def test_flags_come_from_the_fields_metadata():
    fv = flags.FlagValues()
    cli_flags.define_flags(flag_values=fv)
    for field in dataclasses.fields(Config):
        assert fv[field.name].help.endswith(field.metadata["help"]), field.name
        accepted = field.metadata.get("choices")
        if accepted and isinstance(field.default, str):
            assert fv[field.name].parser.enum_values == list(accepted), field.name
    assert fv["resnet_depth"].flag_type() == "int"  # accepted values checked by validate()


def test_derived_values_leave_the_fields_as_given():
    cfg = Config(model_dir="/x", train_mode="finetune", linear_eval=True, use_tpu=True,
                 tpu_name="local")
    assert (cfg.fine_tune_after_block, cfg.effective_fine_tune_after_block) == (-1, 4)
    assert (cfg.strategy, cfg.strategy_name) == ("auto", "tpu")
    cfg.validate()
    assert dataclasses.replace(cfg, linear_eval=False).effective_fine_tune_after_block == -1
    assert Config(use_tpu=True, strategy="default").strategy_name == "default"
    with pytest.raises(ValueError, match=r"--fine_tune_after_block=4 \(or --linear_eval\)"):
        Config(model_dir="/x", linear_eval=True).validate()


def test_from_flagfile_reads_a_flagfile_with_overrides(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    cfg = cli_flags.from_flagfile("flags/smoke.flags", model_dir=str(tmp_path), train_steps=3)
    assert cfg.model_dir == str(tmp_path) and cfg.train_steps == 3
    assert cfg == dataclasses.replace(
        _parse(["--flagfile=flags/smoke.flags"]), model_dir=str(tmp_path), train_steps=3)
    with pytest.raises(ValueError, match="does not exist"):
        cli_flags.from_flagfile("flags/no_such.flags")


@pytest.mark.parametrize("given", ["run", "prefix", "export"])
def test_finetune_takes_the_architecture_flags_not_given_from_the_checkpoints_run(
        given, tmp_path, capsys):
    run = tmp_path / "converted"
    (run / "saved_model" / "9").mkdir(parents=True)
    (run / "saved_model" / "9" / "saved_model.pb").write_bytes(b"")
    run_folder.write_settings(Config(model_dir=str(run), resnet_depth=101, width_multiplier=2,
                                     sk_ratio=0.0625, proj_head_mode="none", image_size=32),
                              str(run / "flags.txt"))
    checkpoint = {"run": str(run), "prefix": str(run / "ckpt-9"),
                  "export": str(run / "saved_model" / "9")}[given]
    fv = flags.FlagValues()
    cli_flags.define_flags(flag_values=fv, train_mode="finetune")
    recipe = tmp_path / "recipe.flags"  # a recipe written for ResNet-50
    recipe.write_text("--resnet_depth=50\n--proj_head_mode=nonlinear\n--learning_rate=0.1\n")
    argv = ["prog", f"--flagfile={recipe}", f"--checkpoint={checkpoint}",
            "--width_multiplier=3", "--model_dir=/tmp/x"]
    fv(argv)
    cli_flags.adopt_checkpoint_architecture("simclr-finetune", cli_flags.explicit_flags(argv),
                                            fv)
    cfg = cli_flags.config_from_flags(fv)
    # Taken from the run where not on the command line (the recipe's architecture too);
    # --width_multiplier on the command line wins; the rest as given.
    assert (cfg.resnet_depth, cfg.sk_ratio, cfg.proj_head_mode, cfg.image_size) == (
        101, 0.0625, "none", 32)
    assert cfg.width_multiplier == 3 and cfg.learning_rate == 0.1
    out = capsys.readouterr().out
    assert f"({run / 'flags.txt'}): --resnet_depth=101 --sk_ratio=0.0625 --image_size=32 " \
        "--proj_head_mode=none" in out, out
    # A checkpoint with no run beside it changes nothing.
    fv2 = flags.FlagValues()
    cli_flags.define_flags(flag_values=fv2, train_mode="finetune")
    fv2(["prog", f"--checkpoint={tmp_path / 'elsewhere' / 'ckpt-1'}"])
    cli_flags.adopt_checkpoint_architecture("simclr-finetune", set(), fv2)
    assert cli_flags.config_from_flags(fv2).resnet_depth == Config().resnet_depth
