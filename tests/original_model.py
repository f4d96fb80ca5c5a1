"""The original SimCLR tf2 code's models, for the conversion tests, without that code.

``write_checkpoint`` writes a training checkpoint with exactly the keys and shapes the
original writes (read from ``tests/fixtures/original_layouts``), filled with seeded values.
``forward`` is an independent inference-mode forward pass over such values, written from the
original's definition (ResNet v1.5 with fixed padding, batch norm + ReLU after each
convolution but the last of a block, projection shortcuts, the SK block, the heads).
"""

import os
import re

import numpy as np
import tensorflow as tf

LAYOUTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "original_layouts")
VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"
EPSILON = 1e-5
R = "model/resnet_model/"


def layout(name: str, scale: float = 1.0):
    """{key: shape} of the model variables (and global_step) in the listing ``name``;
    ``scale`` multiplies every channel count but the images' 3 and the classes."""
    shapes = {}
    with open(os.path.join(LAYOUTS, name + ".txt")) as f:
        for line in f:
            if line.startswith("#"):
                break
            key, shape = line.rstrip("\n").split(" ", 1)
            if not key.startswith("model/") or "OPTIMIZER_SLOT" in key:
                continue
            key = key[:-len(VALUE)]
            shapes[key] = _scaled(key, [int(d) for d in re.findall(r"\d+", shape)], scale)
    return shapes


def _scaled(key, dims, scale):
    """The shape of ``key`` in the same model with every channel count x ``scale``: not the
    kernels' spatial sizes, the images' 3 channels, the classes, or the selective-kernel
    squeeze width (max(filters / 16, 32) = 32 in these models)."""
    if scale == 1:
        return dims
    def s(d):
        return max(1, int(d * scale))
    if "supervised_head" in key:
        return [s(dims[0]), dims[1]] if key.endswith("kernel") else dims
    if "/conv2d_0/" in key:
        return dims[:2] + [s(dims[2]), dims[3]]
    if "/conv2d_1/" in key:
        return dims[:2] + [dims[2], s(dims[3])]
    if "/batch_norm_relu_1/" in key:
        return dims
    if len(dims) == 4:
        return dims[:2] + [dims[2] if dims[2] == 3 else s(dims[2]), s(dims[3])]
    return [s(d) for d in dims]


def values_for(shapes, seed=0):
    """Seeded values that keep activations in range: He-scaled kernels, gamma near 1,
    positive moving variances."""
    rng = np.random.default_rng(seed)
    values = {}
    for key, shape in sorted(shapes.items()):
        if key.endswith("kernel"):
            fan_in = int(np.prod(shape[:-1]))
            v = rng.normal(0, np.sqrt(2.0 / fan_in), shape)
        elif key.endswith("moving_variance"):
            v = rng.uniform(0.5, 1.5, shape)
        elif key.endswith("gamma"):
            v = rng.uniform(0.8, 1.2, shape)
        else:  # beta, moving_mean, bias
            v = rng.normal(0, 0.1, shape)
        values[key] = v.astype(np.float32)
    return values


def _tree(values):
    root = {}
    for key, value in values.items():
        node = root
        parts = key.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return root


def _trackable(node):
    if not isinstance(node, dict):
        return tf.Variable(node)
    if all(k.isdigit() for k in node):  # a list: its positions are the keys
        items = [tf.Module() for _ in range(max(int(k) for k in node) + 1)]
        for k, child in node.items():
            items[int(k)] = _trackable(child)
        return items
    obj = tf.Module()
    for k, child in node.items():
        setattr(obj, k, _trackable(child))
    return obj


def write_checkpoint(directory: str, values, step: int = 7) -> str:
    """A checkpoint with the original's keys for ``values``; returns its prefix."""
    model = _trackable(_tree({k[len("model/"):]: v for k, v in values.items()}))
    ckpt = tf.train.Checkpoint(model=model, global_step=tf.Variable(step, dtype=tf.int64))
    return ckpt.write(os.path.join(directory, "ckpt-%d" % step))


# The forward pass, from the original's definition.

def _conv(v, x, key, stride=1):
    kernel = tf.constant(v[key + "/conv2d/kernel"] if key + "/conv2d/kernel" in v else v[key])
    k = kernel.shape[0]
    if stride > 1:  # fixed padding: pad k - 1 in total, then VALID
        begin = (k - 1) // 2
        x = tf.pad(x, [[0, 0], [begin, k - 1 - begin], [begin, k - 1 - begin], [0, 0]])
        return tf.nn.conv2d(x, kernel, stride, "VALID")
    return tf.nn.conv2d(x, kernel, 1, "SAME")


def _bn(v, x, key, relu=True):
    beta = v.get(key + "/beta", 0.0)
    x = (x - v[key + "/moving_mean"]) / np.sqrt(v[key + "/moving_variance"] + EPSILON)
    x = x * v[key + "/gamma"] + beta
    return tf.nn.relu(x) if relu else x


def _sk_conv(v, x, key, stride):
    x = _bn(v, _conv(v, x, key + "/conv2d_fixed_padding", stride), key + "/batch_norm_relu/bn")
    streams = tf.stack(tf.split(x, 2, axis=-1))
    pooled = tf.reduce_mean(tf.reduce_sum(streams, 0), [1, 2], keepdims=True)
    squeezed = _bn(v, _conv(v, pooled, key + "/conv2d_0/kernel"),
                   key + "/batch_norm_relu_1/bn")
    mixing = _conv(v, squeezed, key + "/conv2d_1/kernel")
    mixing = tf.nn.softmax(tf.stack(tf.split(mixing, 2, axis=-1)), axis=0)
    return tf.reduce_sum(streams * mixing, 0)


def _block(v, x, key, stride, kind, sk):
    if kind == "basic":
        p = key + "/conv2d_bn_layers/"
        y = _bn(v, _conv(v, x, p + "0", stride), p + "1/bn")
        y = _bn(v, _conv(v, y, p + "2"), p + "3/bn", relu=False)
        short = key + "/shortcut_layers/"
        conv, bn = "0", "1"
    else:
        p = key + "/conv_relu_dropblock_layers/"
        y = _bn(v, _conv(v, x, p + "0"), p + "1/bn")
        if sk:
            y = _sk_conv(v, y, p + "3", stride)
            y = _bn(v, _conv(v, y, p + "5"), p + "6/bn", relu=False)
        else:
            y = _bn(v, _conv(v, y, p + "3", stride), p + "4/bn")
            y = _bn(v, _conv(v, y, p + "6"), p + "7/bn", relu=False)
        short = key + "/projection_layers/"
        first = (2 if stride > 1 else 1) if sk else 0
        conv, bn = str(first), str(first + 1)
    if short + conv + "/conv2d/kernel" in v:
        if sk and stride > 1:  # ResNet-D: fixed padding of a 2-wide window, pool VALID
            x = tf.nn.avg_pool2d(tf.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]]), 2, stride,
                                 "VALID")
        elif sk:
            x = tf.nn.avg_pool2d(x, 2, 1, "SAME")
        x = _bn(v, _conv(v, x, short + conv, 1 if sk else stride), short + bn + "/bn",
                relu=False)
    return tf.nn.relu(y + x)


def forward(v, images, num_groups_blocks, kind, sk, cifar_stem):
    """The original's endpoints (inference mode) for ``images`` [B, H, W, 3]."""
    s = R + "initial_conv_relu_max_pool/"
    x = tf.convert_to_tensor(images)
    if sk:
        x = _bn(v, _conv(v, x, s + "0", 2), s + "1/bn")
        x = _bn(v, _conv(v, x, s + "2"), s + "3/bn")
        x = _bn(v, _conv(v, x, s + "4"), s + "6/bn")
    else:
        x = _bn(v, _conv(v, x, s + "0", 1 if cifar_stem else 2), s + "2/bn")
    if not cifar_stem:
        x = tf.nn.max_pool2d(x, 3, 2, "SAME")
    out = {}
    for g, blocks in enumerate(num_groups_blocks):
        for b in range(blocks):
            stride = (1 if g == 0 else 2) if b == 0 else 1
            x = _block(v, x, f"{R}block_groups/{g}/layers/{b}", stride, kind, sk)
        out[f"block_group{g + 1}"] = x
    h = tf.reduce_mean(x, [1, 2])
    out["final_avg_pool"] = h
    z, j = h, 0
    head = "model/_projection_head/linear_layers/"
    while f"{head}{j}/dense/kernel" in v:
        last = f"{head}{j + 1}/dense/kernel" not in v
        z = _bn(v, tf.matmul(z, v[f"{head}{j}/dense/kernel"]), f"{head}{j}/bn_relu/bn",
                relu=not last)
        j += 1
    out["proj_head_output"] = z
    sup = "model/supervised_head/linear_layer/dense/"
    if sup + "kernel" in v:
        out["logits_sup"] = tf.matmul(h, v[sup + "kernel"]) + v[sup + "bias"]
    return out


# The listings' other sections.

def listing_section(name, heading):
    """[(first field, rest of the line)] of the section of listing ``name`` that starts with
    the line ``# <heading>...``."""
    rows, inside = [], False
    with open(os.path.join(LAYOUTS, name + ".txt")) as f:
        for line in f:
            if line.startswith("#"):
                inside = line.startswith("# " + heading)
            elif inside and line.strip():
                first, rest = line.rstrip("\n").split(" ", 1)
                rows.append((first, rest))
    return rows
