"""The original's hub-style SavedModels (the published SimCLRv1 / v2 models) for ``convert``.

A SavedModel of the original stores its variables by position: ``model/resnet_model/
variables/N``, ``model/_projection_head/variables/N``, ``model/supervised_head/variables/N``;
their Keras names are in ``saved_model.pb``'s object graph. ``OriginalSavedModel`` puts each
position back under the key the original's training checkpoint gives the same variable, so
that ``convert.fill`` reads both alike. The positions follow the original's layer order
(measured by running it; docs/converting.md): kernels, gammas and betas first, then every
moving statistic in the same order; a basic block lists its main path before its projection
shortcut, a bottleneck block its shortcut first; a projection-head layer lists its batch norm
before its dense kernel. Every position is checked against its Keras name's variable kind and
its shape, and a mismatch is named.
"""

import os
import re
from typing import Dict, List, Tuple

import tensorflow as tf

from simclr_tf import convert
from simclr_tf import resnet

SECTIONS = ("model/resnet_model/variables/", "model/_projection_head/variables/",
            "model/supervised_head/variables/")
R = convert.RESNET


def variable_names(path: str) -> Dict[str, str]:
    """Object-graph path (``model/resnet_model/variables/3``) -> the variable's name."""
    from tensorflow.core.protobuf import saved_model_pb2  # noqa: PLC0415

    proto = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    nodes = proto.meta_graphs[0].object_graph_def.nodes
    names, seen, stack = {}, {0}, [(0, "")]
    while stack:
        index, prefix = stack.pop()
        for child in nodes[index].children:
            path_ = f"{prefix}/{child.local_name}" if prefix else child.local_name
            node = nodes[child.node_id]
            if node.WhichOneof("kind") == "variable":
                names[path_] = node.variable.name.split(":")[0]
            elif child.node_id not in seen:
                seen.add(child.node_id)
                stack.append((child.node_id, path_))
    return names


def _bn_keys(key: str, center: bool = True) -> Tuple[List[str], List[str]]:
    return ([key + "/gamma"] + ([key + "/beta"] if center else []),
            [key + "/moving_mean", key + "/moving_variance"])


def _block_keys(key: str, kind: str, sk: bool, strided: bool, projection: bool):
    """(trainable, moving) keys of one block in the SavedModel's order."""
    path, convs, bns = convert.main_path_slots(kind, sk)
    parts = [f"{key}/{path}/{i}/conv2d/kernel" for i in convs]
    trainable, moving = [], []
    main = []
    for i, (c, b) in enumerate(zip(parts, bns)):
        if sk and i == 1:  # the SK conv sits between conv_a and conv_c
            sk_key = f"{key}/{path}/3"
            t1, m1 = _bn_keys(sk_key + "/batch_norm_relu/bn")
            t2, m2 = _bn_keys(sk_key + "/batch_norm_relu_1/bn")
            main.append(([sk_key + "/conv2d_fixed_padding/conv2d/kernel", *t1,
                          sk_key + "/conv2d_0/kernel", *t2, sk_key + "/conv2d_1/kernel"],
                         m1 + m2))
        t, m = _bn_keys(f"{key}/{path}/{b}/bn")
        main.append(([c, *t], m))
    short = []
    if projection:
        first = (2 if strided else 1) if sk else 0
        path_ = "projection_layers" if kind == "bottleneck" else "shortcut_layers"
        t, m = _bn_keys(f"{key}/{path_}/{first + 1}/bn")
        short = [([f"{key}/{path_}/{first}/conv2d/kernel", *t], m)]
    for t, m in (main + short if kind == "basic" else short + main):
        trainable += t
        moving += m
    return trainable, moving


def resnet_keys(kind: str, blocks: Tuple[int, ...], sk: bool) -> List[str]:
    """The training-checkpoint keys of ``resnet_model.variables``, position by position."""
    s = R + "initial_conv_relu_max_pool/"
    layers = ([(0, "conv"), (1, "bn"), (2, "conv"), (3, "bn"), (4, "conv"), (6, "bn")] if sk
              else [(0, "conv"), (2, "bn")])
    trainable, moving = [], []
    for index, what in layers:
        if what == "conv":
            trainable.append(f"{s}{index}/conv2d/kernel")
        else:
            t, m = _bn_keys(f"{s}{index}/bn")
            trainable += t
            moving += m
    for g, count in enumerate(blocks):
        for b in range(count):
            t, m = _block_keys(f"{R}block_groups/{g}/layers/{b}", kind, sk,
                               strided=g > 0 and b == 0, projection=b == 0)
            trainable += t
            moving += m
    return trainable + moving


def head_keys(num_layers: int) -> List[str]:
    """The keys of ``_projection_head.variables``: per layer bn gamma (beta), dense kernel."""
    trainable, moving = [], []
    for j in range(num_layers):
        t, m = _bn_keys(f"{convert.PROJ_HEAD}{j}/bn_relu/bn", center=j < num_layers - 1)
        trainable += t + [f"{convert.PROJ_HEAD}{j}/dense/kernel"]
        moving += m
    return trainable + moving


def _structure(names: Dict[str, str]) -> Tuple[str, Tuple[int, ...], bool, int]:
    """Block kind, blocks per group, selective kernels and projection layers, from names."""
    scopes: Dict[int, list] = {}
    for name in names.values():
        m = re.search(r"block_group(\d)/(\w+?_block(?:_\d+)?)/", name)
        if m and m.group(2) not in scopes.setdefault(int(m.group(1)), []):
            scopes[int(m.group(1))].append(m.group(2))
    if sorted(scopes) != [1, 2, 3, 4]:
        raise ValueError("not a SavedModel of the original SimCLR tf2 ResNet: no "
                         "resnet/block_group1..4 variables.")
    kind = "bottleneck" if "bottleneck_block" in scopes[1][0] else "basic"
    sk = any("sk__conv2d" in n for n in names.values())
    layers = {m.group(1) for n in names.values() for m in [re.search(r"/nl_(\d+)/", n)] if m}
    return kind, tuple(len(scopes[g]) for g in (1, 2, 3, 4)), sk, len(layers)


class OriginalSavedModel(convert.OriginalCheckpoint):
    """An original SavedModel, read as if it were the original's training checkpoint."""

    def __init__(self, path: str):  # noqa: D107 (no super().__init__: another reader)
        self.prefix = path
        self._reader = tf.train.load_checkpoint(os.path.join(path, "variables", "variables"))
        self._shape_map = self._reader.get_variable_to_shape_map()
        names = variable_names(path)
        kind, blocks, sk, num_layers = _structure(names)
        if (kind, blocks) not in resnet.DEPTHS.values():
            raise ValueError(f"{path}: {kind} blocks {blocks} per group match no ResNet depth.")
        expected = (resnet_keys(kind, blocks, sk), head_keys(num_layers),
                    [convert.SUP_HEAD + "kernel", convert.SUP_HEAD + "bias"])
        self.shapes, self._stored, self.step = {}, {}, 0
        again = [p for p in names if not p.startswith(SECTIONS)]
        self.left = {"the same variables listed again": again} if again else {}
        for section, keys in zip(SECTIONS, expected):
            self._read_section(names, section, keys)

    def _read_section(self, names: Dict[str, str], section: str, keys: List[str]):
        positions = sorted(int(p[len(section):]) for p in names
                           if p.startswith(section) and p[len(section):].isdigit())
        if not positions:
            return  # e.g. the SimCLRv1 models have no projection head
        if len(positions) != len(keys):
            raise ValueError(f"{self.prefix}: {len(positions)} variables in {section} where "
                             f"the architecture read from it has {len(keys)}.")
        for position, key in zip(positions, keys):
            stored = f"{section}{position}"
            name = names[stored]
            if name.rsplit("/", 1)[-1] != key.rsplit("/", 1)[-1]:
                raise ValueError(f"{self.prefix}: {stored} is {name}, where the original's "
                                 f"layer order puts {key}.")
            self._stored[key] = stored + convert.VALUE
            self.shapes[key] = self._shape_map[self._stored[key]]

    def value(self, key: str):
        return self._reader.get_tensor(self._stored[key])
