"""The original SimCLR code's models (tf2 training checkpoints; its SavedModels through
``convert_savedmodel``) as models of this project.

The original writes ``tf.train.Checkpoint(model=..., optimizer=..., global_step=...)`` with
object-graph keys such as ``model/resnet_model/block_groups/0/layers/0/conv2d_bn_layers/0/
conv2d/kernel``. This module reads such a checkpoint, infers the architecture from its keys
and shapes (depth from the blocks per group, width from the stem, selective kernels from their
variables, the CIFAR stem from the stem's kernel, the heads from theirs), builds the model of
this project, and fills every variable of it from one key of the original: a variable that no
key fills is an error, and every key of the original is either used or named as left
(optimizer slots, step counters).
"""

import dataclasses
import os
import re
from typing import Callable, Dict, List, Optional, Tuple

import tensorflow as tf

from simclr_tf.interop import original_savedmodel
from simclr_tf.interop.original_checkpoint import (  # noqa: F401
    PROJ_HEAD,
    RESNET,
    SK_RATIO,
    SUP_HEAD,
    Architecture,
    OriginalCheckpoint,
    main_path_slots,
)
from simclr_tf.models import resnet, saved_files
from simclr_tf.models import simclr_model as model_lib
from simclr_tf.runs import export as export_lib
from simclr_tf.runs import run_folder


def _bn(layer, key: str) -> List[Tuple[tf.Variable, str]]:
    """A Keras batch norm's variables and the original keys ``key/{gamma,beta,...}``."""
    pairs = [(layer.gamma, key + "/gamma")]
    if layer.center:
        pairs.append((layer.beta, key + "/beta"))
    return pairs + [(layer.moving_mean, key + "/moving_mean"),
                    (layer.moving_variance, key + "/moving_variance")]


def _conv(layer, key: str) -> List[Tuple[tf.Variable, str]]:
    return [(layer.conv.kernel, key + "/conv2d/kernel")]


def _stem_pairs(stem, sk: bool) -> List[Tuple[tf.Variable, str]]:
    base = RESNET + "initial_conv_relu_max_pool/"
    if not sk:  # conv, the initial_conv identity, batch norm
        return _conv(stem.conv, base + "0") + _bn(stem.bn.bn, base + "2/bn")
    conv1, bn1, conv2, bn2 = stem.pre  # ResNet-D deep stem: 3 convs, identity at 5
    return (_conv(conv1, base + "0") + _bn(bn1.bn, base + "1/bn") + _conv(conv2, base + "2")
            + _bn(bn2.bn, base + "3/bn") + _conv(stem.conv, base + "4")
            + _bn(stem.bn.bn, base + "6/bn"))


def _sk_pairs(sk_conv, key: str) -> List[Tuple[tf.Variable, str]]:
    return (_conv(sk_conv.conv, key + "/conv2d_fixed_padding")
            + _bn(sk_conv.bn.bn, key + "/batch_norm_relu/bn")
            + [(sk_conv.squeeze.kernel, key + "/conv2d_0/kernel")]
            + _bn(sk_conv.squeeze_bn.bn, key + "/batch_norm_relu_1/bn")
            + [(sk_conv.excite.kernel, key + "/conv2d_1/kernel")])


def _block_pairs(block, key: str, sk: bool) -> List[Tuple[tf.Variable, str]]:
    """A residual block: the main path's layers at the original's positions, then the
    projection shortcut."""
    pairs = []
    path, convs, bns = main_path_slots(block.kind, sk)
    convs, bns = iter(convs), iter(bns)
    for layer in block.layers_:
        if isinstance(layer, resnet._SKConv):  # noqa: SLF001
            pairs += _sk_pairs(layer, f"{key}/{path}/3")
        elif hasattr(layer, "bn"):
            pairs += _bn(layer.bn, f"{key}/{path}/{next(bns)}/bn")
        else:
            pairs += _conv(layer, f"{key}/{path}/{next(convs)}")
    if block.shortcut is not None:  # SK: [fixed padding when strided,] average pool first
        first = (2 if block.shortcut.strides > 1 else 1) if sk else 0
        conv, bn = first, first + 1
        path = "projection_layers" if block.kind == "bottleneck" else "shortcut_layers"
        pairs += _conv(block.shortcut.conv, f"{key}/{path}/{conv}")
        pairs += _bn(block.shortcut.bn.bn, f"{key}/{path}/{bn}/bn")
    return pairs


def variable_pairs(model, sk: bool) -> List[Tuple[tf.Variable, str]]:
    """Every variable of ``model`` (a built ``SimCLRModel``) with the original key it takes."""
    encoder = model.encoder
    pairs = _stem_pairs(encoder.stem, sk)
    for g, group in enumerate(encoder.block_groups):
        for b, block in enumerate(group.blocks):
            pairs += _block_pairs(block, f"{RESNET}block_groups/{g}/layers/{b}", sk)
    for j, layer in enumerate(model.projection_head.layers_):
        pairs += [(layer.dense.kernel, f"{PROJ_HEAD}{j}/dense/kernel")]
        pairs += _bn(layer.bn, f"{PROJ_HEAD}{j}/bn_relu/bn")
    if model.supervised_head is not None:
        dense = model.supervised_head.dense
        pairs += [(dense.kernel, SUP_HEAD + "kernel"), (dense.bias, SUP_HEAD + "bias")]
    return pairs


def fill(model, original: OriginalCheckpoint, sk: bool) -> List[str]:
    """Assigns every variable of ``model`` from ``original``; returns the original keys that
    were not used. Raises ValueError naming a variable without a key or of another shape."""
    pairs = variable_pairs(model, sk)
    missing = [key for _, key in pairs if key not in original.shapes]
    if missing:
        raise ValueError(f"{original.prefix} has no value for {len(missing)} variable(s) of "
                         f"the model, e.g. {missing[:3]}: it is not the architecture read "
                         "from it.")
    for variable, key in pairs:
        value = original.value(key)
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(f"{key} is {list(value.shape)} in {original.prefix} but "
                             f"{variable.shape.as_list()} in the model ({variable.name}).")
        variable.assign(value)
    used = {key for _, key in pairs}
    return sorted(k for k in original.shapes if k not in used)


def _fill_all(model, original: OriginalCheckpoint, arch: Architecture):
    """``fill``, and an error when a variable of the original has no place in the model."""
    with saved_files.reading(original.prefix, "--original"):  # garbled bytes: one line
        unused = fill(model, original, sk=arch.sk_ratio > 0)
    if unused:
        raise ValueError(f"{len(unused)} variable(s) of {original.prefix} have no place in "
                         f"the model, e.g. {unused[:3]}.")


def load_original(path: str, image_size: Optional[int] = None):
    """The original's model at ``path`` (see ``open_original``) as a model of this project,
    in fine-tuning mode, every variable filled: for notebooks. ``image_size`` only picks the
    stem's kind (<= 32 px: the CIFAR stem) and defaults to what the checkpoint holds; the
    model takes images of any size. Call it with ``training=False`` for the original's
    inference mode; ``return_endpoints=True`` gives the original's endpoint names."""
    original = open_original(path)
    arch = original.architecture()
    size = image_size or (32 if arch.cifar_stem else 224)
    if (size <= 32) != arch.cifar_stem:
        raise ValueError(f"image_size={size} does not fit {describe(arch)} (the CIFAR stem "
                         "is for images <= 32 px).")
    model = model_lib.build_model(
        resnet_depth=arch.resnet_depth, width_multiplier=arch.width_multiplier,
        sk_ratio=arch.sk_ratio, image_size=size, proj_head_mode=arch.proj_head_mode,
        num_proj_layers=max(arch.num_proj_layers, 1), proj_out_dim=arch.proj_out_dim or 128,
        num_classes=arch.num_classes, mode="finetune")
    model(tf.zeros([1, size, size, 3]), training=False)
    _fill_all(model, original, arch)
    return model


def open_original(path: str) -> OriginalCheckpoint:
    """The original's model at ``path``: a SavedModel folder (the published models), a
    training checkpoint's ``ckpt-N`` prefix, or the folder holding the checkpoints (or,
    with none, the SavedModel in it: a published model's folder as downloaded holds
    ``saved_model/``, the original's run folder ``saved_model/<step>/``)."""
    if tf.io.gfile.isdir(path) and not tf.train.latest_checkpoint(path):
        path = _savedmodel_in(path) or path
    if export_lib.holds_savedmodel(path):  # it checks its files itself, naming them
        return original_savedmodel.OriginalSavedModel(path)
    prefix = resolve_original(path)
    saved_files.check_bundle(prefix, f"--original={path!r}")
    with saved_files.reading(prefix, f"--original={path!r}"):
        return OriginalCheckpoint(prefix)


def _savedmodel_in(folder: str) -> Optional[str]:
    """``folder`` itself, ``folder/saved_model``, or the highest-numbered SavedModel in
    either (the original's exports, ``saved_model/<step>``), when one holds saved_model.pb."""
    for base in (folder, os.path.join(folder, "saved_model")):
        if export_lib.holds_savedmodel(base):
            return base
        numbered = export_lib.numbered_savedmodels(base)
        if numbered:
            return numbered[-1]
    return None


def resolve_original(path: str) -> str:
    """The checkpoint prefix of ``path`` (a ``ckpt-N`` prefix or the folder holding it)."""
    if tf.io.gfile.isdir(path):
        # The newest the folder's 'checkpoint' file names, else the highest ckpt-N in it.
        prefix = tf.train.latest_checkpoint(path)
        numbered = [(int(m.group(1)), p[:-len(".index")]) for p in
                    tf.io.gfile.glob(os.path.join(path, "*-*.index"))
                    for m in [re.search(r"-(\d+)\.index$", p)] if m]
        if not prefix and not numbered:
            raise ValueError(f"{path} holds no checkpoint (no ckpt-N.index); give the "
                             "original run's folder or a ckpt-N prefix.")
        return prefix or max(numbered)[1]
    if not tf.io.gfile.exists(path + ".index"):
        what = ("does not exist" if not tf.io.gfile.exists(path)
                else f"is {saved_files.describe(path)}, not a model of the original")
        raise ValueError(f"--original={path!r} {what}: give the original's SavedModel "
                         "folder, a ckpt-N prefix of its run (the path without .index), or "
                         "the folder holding it.")
    return path


def evidence(original: OriginalCheckpoint, flag: str) -> str:
    """The variables the architecture's ``flag`` was read from, in a few words."""
    stem = RESNET + "initial_conv_relu_max_pool/0/conv2d/kernel"
    if flag in ("width_multiplier", "image_size"):
        return f"{stem} is {list(original.shapes[stem])}"
    if flag == "resnet_depth":
        return f"{RESNET}block_groups/0..3 hold {original.architecture().resnet_depth}'s blocks"
    if flag == "sk_ratio":
        sk = [k for k in original.shapes if "/conv2d_0/kernel" in k]
        return f"{sk[0]} is there" if sk else "no selective-kernel variables (conv2d_0/1)"
    heads = sorted(k for k in original.shapes if k.startswith(PROJ_HEAD) and "dense" in k)
    return f"{heads[-1]} is {list(original.shapes[heads[-1]])}" if heads else \
        f"no {PROJ_HEAD} variables"


def config_for(cfg, arch: Architecture, explicit=frozenset(), original=None):
    """``cfg`` with the architecture read from the original; a flag given on the command
    line (``explicit``) that disagrees with it is an error naming both values and, given
    ``original``, the variables it was read from."""
    why = (lambda flag: f": {evidence(original, flag)}") if original else (lambda flag: "")
    read = {"resnet_depth": arch.resnet_depth, "width_multiplier": arch.width_multiplier,
            "sk_ratio": arch.sk_ratio, "proj_head_mode": arch.proj_head_mode,
            "num_proj_layers": max(arch.num_proj_layers, 1),
            "proj_out_dim": arch.proj_out_dim or cfg.proj_out_dim}
    differ = [f"--{name}={getattr(cfg, name)} (the checkpoint holds {value}{why(name)})"
              for name, value in read.items()
              if name in explicit and getattr(cfg, name) != value]
    image_size = cfg.image_size if "image_size" in explicit else (32 if arch.cifar_stem
                                                                 else 224)
    if (image_size <= 32) != arch.cifar_stem:
        differ.append(f"--image_size={image_size} (the checkpoint has the "
                      f"{'CIFAR' if arch.cifar_stem else 'ImageNet'} stem, for images "
                      f"{'<= 32' if arch.cifar_stem else '> 32'} px{why('image_size')})")
    if differ:
        raise ValueError("the flags disagree with the original's checkpoint: "
                         + "; ".join(differ) + ".")
    return dataclasses.replace(cfg, image_size=image_size, **read)


def describe(arch: Architecture) -> str:
    """One line: the architecture as this project's flags."""
    head = (f"{arch.num_proj_layers}-layer projection head to {arch.proj_out_dim}"
            if arch.num_proj_layers else "no projection head")
    classes = f"{arch.num_classes}-class supervised head" if arch.num_classes else \
        "no supervised head"
    return (f"ResNet-{arch.resnet_depth} x{arch.width_multiplier:g}"
            f"{f', selective kernels {arch.sk_ratio:g}' if arch.sk_ratio else ''}, "
            f"{'CIFAR' if arch.cifar_stem else 'ImageNet'} stem, {head}, {classes}")


def convert_checkpoint(path: str, cfg, explicit=frozenset(),
                       before_save: Optional[Callable] = None) -> Dict:
    """Makes ``cfg.model_dir`` a run of this project from the original's checkpoint at
    ``path``: ``ckpt-<step>`` (encoder, projection head, supervised head when present) and
    its export in ``saved_model/<step>``. ``before_save(cfg)`` gets the run's config once the
    architecture is read (the program writes flags.txt). Returns the paths and the
    architecture. Raises ValueError naming what does not fit."""
    original = open_original(path)
    arch = original.architecture()
    print(f"{original.prefix}: {describe(arch)}", flush=True)
    cfg = config_for(dataclasses.replace(cfg, train_mode="finetune"), arch, explicit,
                     original)
    cfg.validate()
    if tf.train.latest_checkpoint(cfg.model_dir):
        raise ValueError(f"--model_dir={cfg.model_dir} already holds a run's checkpoints; "
                         "give an empty or new folder.")
    model = model_lib.from_config(cfg, arch.num_classes)
    _fill_all(model, original, arch)
    left = ", ".join(f"{why} ({len(keys)})" for why, keys in sorted(original.left.items()))
    print(f"converted every model variable of {original.prefix}; left: {left or 'nothing'}",
          flush=True)
    run_folder.output_folder(cfg.model_dir, "model_dir")  # created once there is a model
    with run_folder.RunLock(cfg.model_dir):
        if before_save is not None:
            before_save(cfg)
        manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model),
                                             cfg.model_dir, max_to_keep=1)
        prefix = manager.save(checkpoint_number=original.step)
        target = os.path.join(cfg.model_dir, export_lib.EXPORTS_SUBDIR, str(original.step))
        export_lib.export_checkpoint(cfg, prefix, target)
    print(f"wrote {prefix} and its export {target}", flush=True)
    return {"checkpoint": prefix, "saved_model": target, "architecture": arch,
            "config": cfg}
