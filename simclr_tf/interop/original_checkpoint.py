"""What the original SimCLR tf2 code's training checkpoints hold, read without building
a model: their keys (object-graph paths such as ``model/resnet_model/block_groups/0/layers/0/
conv2d_bn_layers/0/conv2d/kernel``), the architecture those keys and shapes describe, and
where a block keeps its layers. ``convert`` fills a model of this project from it;
``convert_savedmodel`` reads the original's SavedModels into the same form.
"""

import dataclasses
import re
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from simclr_tf.models import resnet

VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"
RESNET = "model/resnet_model/"
PROJ_HEAD = "model/_projection_head/linear_layers/"
SUP_HEAD = "model/supervised_head/linear_layer/dense/"
SK_RATIO = 0.0625  # the only ratio of the original's selective-kernel models
# Keys the conversion leaves, with the reason it says.
LEFT = ((re.compile(r"OPTIMIZER_SLOT"), "optimizer slots"),
        (re.compile(r"^optimizer/"), "optimizer state"),
        (re.compile(r"^(global_step|save_counter)$"), "step counters"))
OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"  # not a variable


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What a checkpoint of the original holds, in this project's flag names."""

    resnet_depth: int
    width_multiplier: float
    sk_ratio: float
    cifar_stem: bool
    num_proj_layers: int  # 0: no projection head (the SimCLRv1 models)
    proj_out_dim: int
    num_classes: Optional[int]  # None: no supervised head

    @property
    def proj_head_mode(self) -> str:
        return "nonlinear" if self.num_proj_layers else "none"


class OriginalCheckpoint:
    """The values of an original tf2 training checkpoint, by key (``.ATTRIBUTES/...`` off)."""

    def __init__(self, prefix: str):
        reader = tf.train.load_checkpoint(prefix)
        self.prefix = prefix
        self.shapes: Dict[str, List[int]] = {}
        self.left: Dict[str, List[str]] = {}
        for key, shape in tf.train.list_variables(prefix):
            key = key[:-len(VALUE)] if key.endswith(VALUE) else key
            if key == OBJECT_GRAPH:
                continue
            reason = next((why for pattern, why in LEFT if pattern.search(key)), None)
            if reason:
                self.left.setdefault(reason, []).append(key)
            else:
                self.shapes[key] = shape
        self._reader = reader
        step_key = "global_step" + VALUE
        self.step = int(reader.get_tensor(step_key)) if reader.has_tensor(step_key) else 0

    def value(self, key: str) -> np.ndarray:
        return self._reader.get_tensor(key + VALUE)

    def architecture(self) -> Architecture:
        """The architecture its keys and shapes describe (ValueError when they do not)."""
        groups = {}
        for key in self.shapes:
            m = re.match(re.escape(RESNET) + r"block_groups/(\d+)/layers/(\d+)/(\w+?)/", key)
            if m:
                groups.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
        if sorted(groups) != [0, 1, 2, 3]:
            raise ValueError(f"{self.prefix} is not a checkpoint of the original SimCLR tf2 "
                             f"ResNet: no {RESNET}block_groups/0..3 keys.")
        blocks = tuple(len(groups[g]) for g in range(4))
        kind = "bottleneck" if any("conv_relu_dropblock_layers" in k for k in self.shapes) \
            else "basic"
        depth = next((d for d, spec in resnet.DEPTHS.items() if spec == (kind, blocks)), None)
        if depth is None:
            raise ValueError(f"{self.prefix}: {kind} blocks {blocks} per group match no ResNet "
                             f"depth of {sorted(resnet.DEPTHS)}.")
        sk = any("/conv2d_0/kernel" in k for k in self.shapes)
        stem = self.shapes[RESNET + "initial_conv_relu_max_pool/0/conv2d/kernel"]
        channels = stem[-1] * 2 if sk else stem[-1]  # the deep stem's first conv has half
        proj = sorted({int(k[len(PROJ_HEAD):].split("/")[0]) for k in self.shapes
                       if k.startswith(PROJ_HEAD)})
        out_dim = self.shapes[f"{PROJ_HEAD}{proj[-1]}/dense/kernel"][-1] if proj else 0
        sup = self.shapes.get(SUP_HEAD + "kernel")
        return Architecture(resnet_depth=depth, width_multiplier=channels / 64,
                            sk_ratio=SK_RATIO if sk else 0.0,
                            cifar_stem=stem[0] == 3 and not sk,
                            num_proj_layers=len(proj), proj_out_dim=out_dim,
                            num_classes=int(sup[-1]) if sup else None)


def main_path_slots(kind: str, sk: bool) -> Tuple[str, Tuple[int, ...], Tuple[int, ...]]:
    """Where the original keeps a block's main path: the list's name, the positions of its
    convolutions and of their batch norms (its ReLU, Dropblock and identity layers hold no
    variables but count; the SK convolution of a SimCLRv2 block sits at 3)."""
    if kind == "basic":
        return "conv2d_bn_layers", (0, 2), (1, 3)
    if sk:
        return "conv_relu_dropblock_layers", (0, 5), (1, 6)
    return "conv_relu_dropblock_layers", (0, 3, 6), (1, 4, 7)
