"""The original's hub-style SavedModels (the published SimCLRv1 / v2 models) for ``convert``.

A SavedModel stores each variable once, under the first path of its object graph that reaches
it (breadth first): the original's export object holds the Keras model as ``model`` and its
trainable variables as ``trainable_variables_list``, so a trainable variable is stored as
``trainable_variables_list/N``, a moving statistic as ``model/resnet_model/variables/N``, and
the published models (saved with that list empty) store everything under the layers'
``variables`` lists. The stored key says nothing about the layer, so this module reads the
object graph the variables file carries (every object with its children and, for a variable,
the key it is stored under) and finds each variable by its own path, ``model/resnet_model/
block_groups/0/layers/0/...``: the key the original's training checkpoint gives the same
variable, so ``convert.fill`` reads a SavedModel like a checkpoint.

When a SavedModel's graph holds the variables only in the layers' ``variables`` lists, their
positions are put back under their layers by the original's layer order (measured by running
it; docs/converting.md): kernels, gammas and betas first, then every moving statistic in the
same order; a basic block lists its main path before its projection shortcut, a bottleneck
block its shortcut first; a projection-head layer lists its batch norm before its dense
kernel. Every position is checked against its Keras name (``saved_model.pb``) and a mismatch
is named. Anything else (another program's SavedModel, a damaged variables file) is one
ValueError naming the path, what was expected and what was found.
"""

import os
import re
from typing import Dict, List, Tuple

import tensorflow as tf

from simclr_tf.interop import original_checkpoint as original
from simclr_tf.models import resnet
from simclr_tf.runs import export as export_lib

SECTIONS = ("model/resnet_model/variables/", "model/_projection_head/variables/",
            "model/supervised_head/variables/")
R = original.RESNET
WANTED = (f"the original SimCLR tf2 code's export (its Keras model as model/, the ResNet "
          f"under {R}block_groups/0..3)")
# What reading a damaged variables file raises (the reader's errors are not all TF's).
READ_ERRORS = (tf.errors.OpError, IndexError, RuntimeError, ValueError)


def _object_graph(path: str):
    """The object graph in ``path``'s variables file (ValueError when it cannot be read)."""
    from tensorflow.core.protobuf import trackable_object_graph_pb2  # noqa: PLC0415

    prefix = os.path.join(path, "variables", "variables")
    if not tf.io.gfile.exists(prefix + ".index"):
        raise ValueError(f"{path} holds saved_model.pb but no variables/variables.index: "
                         f"expected {WANTED}, with its variables.")
    try:
        reader = tf.train.load_checkpoint(prefix)
        graph = trackable_object_graph_pb2.TrackableObjectGraph()
        graph.ParseFromString(reader.get_tensor(original.OBJECT_GRAPH))
    except READ_ERRORS as e:  # truncated, corrupt, no object graph
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{prefix} cannot be read ({first}): expected {WANTED}; is the "
                         "SavedModel whole (copied completely)?") from None
    return reader, graph


def _variable_key(node):
    """The key a variable object is stored under, or None for other objects."""
    return next((a.checkpoint_key for a in node.attributes if a.name == "VARIABLE_VALUE"),
                None)


def variable_paths(graph) -> Tuple[Dict[str, str], Dict[str, str]]:
    """(own, listed): object path -> stored key of every variable, by the path of its layer
    (``.../conv2d/kernel``) and by position in a list of variables (a layer's ``variables``,
    ``trainable_variables_list``). Each object is expanded once, at its first path."""
    own, listed = {}, {}
    first, queue = {0: ""}, [0]
    while queue:
        parent = queue.pop(0)
        children = [(c.local_name, c.node_id) for c in graph.nodes[parent].children]
        is_list = bool(children) and all(
            name.isdigit() and _variable_key(graph.nodes[i]) for name, i in children)
        for name, i in children:
            path = f"{first[parent]}/{name}".lstrip("/")
            key = _variable_key(graph.nodes[i])
            if key:
                (listed if is_list else own)[path] = key
            elif i not in first:
                first[i] = path
                queue.append(i)
    return own, listed


def _bn_keys(key: str, center: bool = True) -> Tuple[List[str], List[str]]:
    return ([key + "/gamma"] + ([key + "/beta"] if center else []),
            [key + "/moving_mean", key + "/moving_variance"])


def _block_keys(key: str, kind: str, sk: bool, strided: bool, projection: bool):
    """(trainable, moving) keys of one block in the SavedModel's order."""
    path, convs, bns = original.main_path_slots(kind, sk)
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
        t, m = _bn_keys(f"{original.PROJ_HEAD}{j}/bn_relu/bn", center=j < num_layers - 1)
        trainable += t + [f"{original.PROJ_HEAD}{j}/dense/kernel"]
        moving += m
    return trainable + moving


def _structure(names: Dict[str, str]) -> Tuple[str, Tuple[int, ...], bool, int]:
    """Block kind, blocks per group, selective kernels and projection layers, from names
    (None when the names hold no ResNet's block groups 1..4)."""
    scopes: Dict[int, list] = {}
    for name in names.values():
        m = re.search(r"block_group(\d)/(\w+?_block(?:_\d+)?)/", name)
        if m and m.group(2) not in scopes.setdefault(int(m.group(1)), []):
            scopes[int(m.group(1))].append(m.group(2))
    if sorted(scopes) != [1, 2, 3, 4]:
        return None
    kind = "bottleneck" if "bottleneck_block" in scopes[1][0] else "basic"
    sk = any("sk__conv2d" in n for n in names.values())
    layers = {m.group(1) for n in names.values() for m in [re.search(r"/nl_(\d+)/", n)] if m}
    return kind, tuple(len(scopes[g]) for g in (1, 2, 3, 4)), sk, len(layers)


def _saved_nodes(path: str):
    """The object graph of ``path``'s saved_model.pb: its nodes, with kinds and names."""
    try:
        return export_lib.saved_object_graph(path)
    except ValueError as e:
        raise ValueError(f"{e}: expected {WANTED}.") from None


def _node_at(nodes, path: str):
    """The node at object path ``path`` (None when the path leads nowhere)."""
    i = 0
    for part in path.split("/"):
        i = next((c.node_id for c in nodes[i].children if c.local_name == part), None)
        if i is None:
            return None
    return nodes[i]


def _found(nodes) -> str:
    """What the SavedModel holds instead, in a few words: its top-level objects and those
    of its ``model`` (Keras's own lists and functions left out)."""
    def objects(node):
        return sorted(c.local_name for c in node.children
                      if nodes[c.node_id].WhichOneof("kind") in ("user_object", "variable")
                      and c.local_name not in KERAS_OWN)
    model = _node_at(nodes, "model")
    inside = f", model/ holding {objects(model) or 'nothing'}" if model is not None else ""
    return f"top-level objects {objects(nodes[0]) or 'none'}{inside}"


KERAS_OWN = ("variables", "trainable_variables", "non_trainable_variables",
             "regularization_losses", "keras_api", "signatures")


class OriginalSavedModel(original.OriginalCheckpoint):
    """An original SavedModel, read as if it were the original's training checkpoint.

    ``by_position`` reads the layers' ``variables`` lists even when the graph gives each
    variable's own path (the tests compare both ways)."""

    def __init__(self, path: str, by_position: bool = False):  # noqa: D107
        self.prefix, self.step, self.left = path, 0, {}
        self._reader, graph = _object_graph(path)
        own, listed = variable_paths(graph)
        layers = {p: key for p, key in own.items() if p.startswith("model/")}
        if by_position or not any(p.startswith(R + "block_groups/") for p in layers):
            layers = self._by_position(listed)
        self.stored = layers  # training key -> the key the variable is stored under
        shapes = self._reader.get_variable_to_shape_map()
        self.shapes = {key: shapes[stored] for key, stored in layers.items()}
        outside = sorted(set(own.values()) - set(layers.values()))
        if outside:
            self.left["variables outside the model"] = outside

    def _by_position(self, listed: Dict[str, str]) -> Dict[str, str]:
        """Training key -> stored key, from the positions in the layers' variable lists."""
        nodes = _saved_nodes(self.prefix)
        names = {}
        for p in listed:
            node = _node_at(nodes, p) if p.startswith(SECTIONS) else None
            if node is not None and node.WhichOneof("kind") == "variable":
                names[p] = node.variable.name.split(":")[0]
        structure = _structure(names)
        if structure is None and _node_at(nodes, "model/encoder") is not None:
            raise ValueError(f"{self.prefix} is an export of simclr_tf itself, not of the "
                             "original: it needs no conversion (simclr-finetune "
                             f"--hub_module={self.prefix}, or its run folder as --checkpoint).")
        if structure is None:
            raise ValueError(f"{self.prefix} is another program's SavedModel: expected "
                             f"{WANTED}; found {_found(nodes)}.")
        kind, blocks, sk, num_layers = structure
        if (kind, blocks) not in resnet.DEPTHS.values():
            raise ValueError(f"{self.prefix}: {kind} blocks {blocks} per group match no "
                             "ResNet depth.")
        expected = (resnet_keys(kind, blocks, sk), head_keys(num_layers),
                    [original.SUP_HEAD + "kernel", original.SUP_HEAD + "bias"])
        stored = {}
        for section, keys in zip(SECTIONS, expected):
            stored.update(self._read_section(names, listed, section, keys))
        return stored

    def _read_section(self, names: Dict[str, str], listed: Dict[str, str], section: str,
                      keys: List[str]) -> Dict[str, str]:
        positions = sorted(int(p[len(section):]) for p in names if p.startswith(section))
        if not positions:
            return {}  # e.g. the SimCLRv1 models have no projection head
        if len(positions) != len(keys):
            raise ValueError(f"{self.prefix}: {len(positions)} variables in {section} where "
                             f"the architecture read from it has {len(keys)}.")
        stored = {}
        for position, key in zip(positions, keys):
            path = f"{section}{position}"
            if names[path].rsplit("/", 1)[-1] != key.rsplit("/", 1)[-1]:
                raise ValueError(f"{self.prefix}: {path} is {names[path]}, where the "
                                 f"original's layer order puts {key}.")
            stored[key] = listed[path]
        return stored

    def value(self, key: str):
        try:
            return self._reader.get_tensor(self.stored[key])
        except READ_ERRORS as e:  # a variables file cut short after its index
            raise ValueError(f"{self.prefix}/variables cannot be read at {self.stored[key]} "
                             f"({type(e).__name__}): is the SavedModel whole (copied "
                             "completely)?") from None
