"""The original SimCLR tf2 code's Keras model, object for object, for the conversion tests.

A SavedModel or checkpoint stores each variable under a path of the saved object graph, so a
reader of the original's files is only tested when the files come from the original's own
object structure. This module rebuilds that structure (read from google-research/simclr
``tf2/resnet.py``, ``tf2/model.py`` and ``run.build_saved_model``) with its arguments passed
in instead of read from flags: the same Keras layer classes (their class names give the
variables' Keras names), the same attributes and lists, created in the same order, and the
root object ``build_saved_model`` exports (``model`` and ``trainable_variables_list``). The
tests check what it writes against the listings measured by running the original
(``tests/fixtures/original_layouts``): the training checkpoint's keys, the SavedModel's keys and
each SavedModel position's Keras name, key for key.

The layers compute the original's inference-mode forward pass (batch norm from its moving
statistics; ``trainable=True`` uses batch statistics); ``original_model.forward`` is a second,
independent one.
"""

import os

import tensorflow as tf
import tf_keras as keras

EPSILON = 1e-5
BLOCKS = {18: ("basic", (2, 2, 2, 2)), 50: ("bottleneck", (3, 4, 6, 3))}


class BatchNormRelu(keras.layers.Layer):
    def __init__(self, relu=True, init_zero=False, center=True, **kwargs):
        super().__init__(**kwargs)
        self.relu = relu
        self.bn = keras.layers.experimental.SyncBatchNormalization(
            momentum=0.9, epsilon=EPSILON, center=center,
            gamma_initializer="zeros" if init_zero else "ones")

    def call(self, inputs, training):
        inputs = self.bn(inputs, training=training)
        return tf.nn.relu(inputs) if self.relu else inputs


class DropBlock(keras.layers.Layer):  # no variables; off (keep_prob None) as by default
    def call(self, net, training):
        return net


class FixedPadding(keras.layers.Layer):
    def __init__(self, kernel_size, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = kernel_size

    def call(self, inputs, training):
        begin = (self.kernel_size - 1) // 2
        end = self.kernel_size - 1 - begin
        return tf.pad(inputs, [[0, 0], [begin, end], [begin, end], [0, 0]])


class Conv2dFixedPadding(keras.layers.Layer):
    def __init__(self, filters, kernel_size, strides, **kwargs):
        super().__init__(**kwargs)
        self.fixed_padding = FixedPadding(kernel_size) if strides > 1 else None
        self.conv2d = keras.layers.Conv2D(filters, kernel_size, strides,
                                          padding="SAME" if strides == 1 else "VALID",
                                          use_bias=False)

    def call(self, inputs, training):
        if self.fixed_padding:
            inputs = self.fixed_padding(inputs, training=training)
        return self.conv2d(inputs, training=training)


class IdentityLayer(keras.layers.Layer):
    def call(self, inputs, training):
        return tf.identity(inputs)


class SK_Conv2D(keras.layers.Layer):  # noqa: N801 (the class name gives the Keras names)
    def __init__(self, filters, strides, sk_ratio, min_dim=32, **kwargs):
        super().__init__(**kwargs)
        self.conv2d_fixed_padding = Conv2dFixedPadding(2 * filters, 3, strides)
        self.batch_norm_relu = BatchNormRelu()
        self.conv2d_0 = keras.layers.Conv2D(max(int(filters * sk_ratio), min_dim), 1,
                                            use_bias=False)
        self.batch_norm_relu_1 = BatchNormRelu()
        self.conv2d_1 = keras.layers.Conv2D(2 * filters, 1, use_bias=False)

    def call(self, inputs, training):
        x = self.batch_norm_relu(self.conv2d_fixed_padding(inputs, training=training),
                                 training=training)
        streams = tf.stack(tf.split(x, 2, axis=3))
        pooled = tf.reduce_mean(tf.reduce_sum(streams, 0), [1, 2], keepdims=True)
        mixing = self.conv2d_1(self.batch_norm_relu_1(self.conv2d_0(pooled),
                                                      training=training))
        mixing = tf.nn.softmax(tf.stack(tf.split(mixing, 2, axis=3)), axis=0)
        return tf.reduce_sum(streams * mixing, 0)


def _projection(filters, strides, sk):
    """The projection shortcut's layers (ResNet-D's average pool with selective kernels)."""
    layers = []
    if sk:
        if strides > 1:
            layers.append(FixedPadding(2))
        layers.append(keras.layers.AveragePooling2D(2, strides,
                                                    "SAME" if strides == 1 else "VALID"))
        layers.append(Conv2dFixedPadding(filters, 1, 1))
    else:
        layers.append(Conv2dFixedPadding(filters, 1, strides))
    return layers + [BatchNormRelu(relu=False)]


class ResidualBlock(keras.layers.Layer):
    def __init__(self, filters, strides, sk, use_projection=False, **kwargs):
        super().__init__(**kwargs)
        self.conv2d_bn_layers = []
        self.shortcut_layers = _projection(filters, strides, sk) if use_projection else []
        self.conv2d_bn_layers.append(Conv2dFixedPadding(filters, 3, strides))
        self.conv2d_bn_layers.append(BatchNormRelu())
        self.conv2d_bn_layers.append(Conv2dFixedPadding(filters, 3, 1))
        self.conv2d_bn_layers.append(BatchNormRelu(relu=False, init_zero=True))

    def call(self, inputs, training):
        shortcut = inputs
        for layer in self.shortcut_layers:
            shortcut = layer(shortcut, training=training)
        for layer in self.conv2d_bn_layers:
            inputs = layer(inputs, training=training)
        return tf.nn.relu(inputs + shortcut)


class BottleneckBlock(keras.layers.Layer):
    def __init__(self, filters, strides, sk, use_projection=False, **kwargs):
        super().__init__(**kwargs)
        self.projection_layers = _projection(4 * filters, strides, sk) if use_projection \
            else []
        self.shortcut_dropblock = DropBlock()
        layers = [Conv2dFixedPadding(filters, 1, 1), BatchNormRelu(), DropBlock()]
        if sk:
            layers.append(SK_Conv2D(filters, strides, sk))
        else:
            layers += [Conv2dFixedPadding(filters, 3, strides), BatchNormRelu()]
        layers.append(DropBlock())
        layers += [Conv2dFixedPadding(4 * filters, 1, 1),
                   BatchNormRelu(relu=False, init_zero=True), DropBlock()]
        self.conv_relu_dropblock_layers = layers

    def call(self, inputs, training):
        shortcut = inputs
        for layer in self.projection_layers:
            shortcut = layer(shortcut, training=training)
        shortcut = self.shortcut_dropblock(shortcut, training=training)
        for layer in self.conv_relu_dropblock_layers:
            inputs = layer(inputs, training=training)
        return tf.nn.relu(inputs + shortcut)


class BlockGroup(keras.layers.Layer):
    def __init__(self, filters, block_fn, blocks, strides, sk, **kwargs):
        super().__init__(**kwargs)
        self.layers = [block_fn(filters, strides, sk, use_projection=True)]
        for _ in range(1, blocks):
            self.layers.append(block_fn(filters, 1, sk))

    def call(self, inputs, training):
        for layer in self.layers:
            inputs = layer(inputs, training=training)
        return inputs


class Resnet(keras.layers.Layer):
    """Returns the pooled features and the block groups' outputs."""

    def __init__(self, depth, width, sk_ratio, cifar_stem, **kwargs):
        super().__init__(**kwargs)
        kind, blocks = BLOCKS[depth]
        channels = int(64 * width)
        sk = sk_ratio if sk_ratio > 0 else 0
        stem = []
        if cifar_stem:
            stem += [Conv2dFixedPadding(channels, 3, 1), IdentityLayer(name="initial_conv"),
                     BatchNormRelu(), IdentityLayer(name="initial_max_pool")]
        else:
            if sk:
                stem += [Conv2dFixedPadding(channels // 2, 3, 2), BatchNormRelu(),
                         Conv2dFixedPadding(channels // 2, 3, 1), BatchNormRelu(),
                         Conv2dFixedPadding(channels, 3, 1)]
            else:
                stem.append(Conv2dFixedPadding(channels, 7, 2))
            stem += [IdentityLayer(name="initial_conv"), BatchNormRelu(),
                     keras.layers.MaxPooling2D(3, 2, "SAME"),
                     IdentityLayer(name="initial_max_pool")]
        self.initial_conv_relu_max_pool = stem
        block_fn = ResidualBlock if kind == "basic" else BottleneckBlock
        self.block_groups = []
        for g, count in enumerate(blocks):
            self.block_groups.append(BlockGroup(channels * 2 ** g, block_fn, count,
                                                1 if g == 0 else 2, sk,
                                                name=f"block_group{g + 1}"))

    def call(self, inputs, training):
        for layer in self.initial_conv_relu_max_pool:
            inputs = layer(inputs, training=training)
        groups = []
        for layer in self.block_groups:
            inputs = layer(inputs, training=training)
            groups.append(inputs)
        return tf.reduce_mean(inputs, [1, 2]), groups


class LinearLayer(keras.layers.Layer):
    def __init__(self, num_classes, use_bias=True, use_bn=False, name="linear_layer",
                 **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.use_bias, self.use_bn = num_classes, use_bias, use_bn
        self._name = name
        if use_bn:
            self.bn_relu = BatchNormRelu(relu=False, center=use_bias)

    def build(self, input_shape):
        units = self.num_classes(input_shape) if callable(self.num_classes) \
            else self.num_classes
        self.dense = keras.layers.Dense(units, use_bias=self.use_bias and not self.use_bn)
        super().build(input_shape)

    def call(self, inputs, training):
        inputs = self.dense(inputs)
        return self.bn_relu(inputs, training=training) if self.use_bn else inputs


class ProjectionHead(keras.layers.Layer):
    def __init__(self, num_layers, out_dim, **kwargs):
        self.linear_layers = []
        for j in range(num_layers):
            last = j == num_layers - 1
            self.linear_layers.append(LinearLayer(
                out_dim if last else (lambda shape: int(shape[-1])), use_bias=not last,
                use_bn=True, name=f"nl_{j}"))
        super().__init__(**kwargs)

    def call(self, inputs, training):
        for j, layer in enumerate(self.linear_layers):
            inputs = layer(inputs, training)
            if j < len(self.linear_layers) - 1:
                inputs = tf.nn.relu(inputs)
        return inputs


class SupervisedHead(keras.layers.Layer):
    def __init__(self, num_classes, name="head_supervised", **kwargs):
        super().__init__(name=name, **kwargs)
        self.linear_layer = LinearLayer(num_classes)

    def call(self, inputs, training):
        return self.linear_layer(inputs, training)


class Model(keras.models.Model):
    """Like the original's, it overrides ``__call__``: Keras never builds the model itself,
    which keeps it out of the SavedModel's Keras serialization (as in the original's)."""

    def __init__(self, depth, width, sk_ratio, cifar_stem, num_classes, num_proj_layers=3,
                 proj_out_dim=128, **kwargs):
        super().__init__(**kwargs)
        self.resnet_model = Resnet(depth, width, sk_ratio, cifar_stem)
        if num_proj_layers:  # the SimCLRv1 models have no projection head
            self._projection_head = ProjectionHead(num_proj_layers, proj_out_dim)
        if num_classes:
            self.supervised_head = SupervisedHead(num_classes)

    def __call__(self, inputs, training):
        h, groups = self.resnet_model(inputs, training=training)
        out = {f"block_group{g + 1}": x for g, x in enumerate(groups)}
        out["final_avg_pool"] = h
        if hasattr(self, "_projection_head"):
            out["proj_head_output"] = self._projection_head(h, training)
        if hasattr(self, "supervised_head"):
            out["logits_sup"] = self.supervised_head(h, training)
        return out


class SavedSimCLR(tf.Module):
    """The object the original's ``run.build_saved_model`` exports."""

    def __init__(self, model, trainable_variables=True):
        super().__init__()
        self.model = model
        # The published models, converted from TF1, were saved with this list empty.
        self.trainable_variables_list = model.trainable_variables if trainable_variables \
            else []

    @tf.function
    def __call__(self, inputs, trainable):
        return self.model(inputs, training=trainable)


def build(depth, width, sk_ratio, cifar_stem, num_classes, num_proj_layers=3,
          proj_out_dim=128):
    """The original's model, built on a small batch (Keras names start from a new session,
    as in a fresh run of the original)."""
    keras.backend.clear_session()
    model = Model(depth, width, sk_ratio, cifar_stem, num_classes, num_proj_layers,
                  proj_out_dim)
    size = 32 if cifar_stem else 64
    model(tf.zeros([1, size, size, 3]), training=False)
    return model


def save(model, directory, trainable_variables=True):
    """``tf.saved_model.save`` of the original's export object, traced as the original
    traces it (any image size, ``trainable`` True and False)."""
    module = SavedSimCLR(model, trainable_variables)
    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    module.__call__.get_concrete_function(spec, trainable=True)
    module.__call__.get_concrete_function(spec, trainable=False)
    tf.saved_model.save(module, directory)
    return directory


def write_savedmodel(directory, listing, scale, arch, seed=0, trainable_variables=True):
    """The original's export of ``arch`` (depth, width, sk_ratio, cifar stem, classes,
    projection layers, output dim) at ``directory``, its variables seeded per training key
    of the listing scaled by ``scale``; returns the path, the values by training key and
    the model.
    Every variable of the model takes exactly one value of the listing and the other way
    round (a structure that differs from the listing fails here)."""
    import original_model  # noqa: PLC0415

    model = build(*arch)
    shapes = original_model.layout(listing, scale)
    if not arch[5]:  # the SimCLRv1 form: no projection head
        shapes = {k: v for k, v in shapes.items() if "_projection_head" not in k}
    values = original_model.values_for(shapes, seed)
    prefix = original_model.write_checkpoint(os.path.join(directory, "values"), values)
    step = tf.Variable(0, dtype=tf.int64)
    tf.train.Checkpoint(model=model, global_step=step).read(prefix).assert_consumed()
    return save(model, os.path.join(directory, "saved_model"), trainable_variables), values, \
        model


def variable_names(path):
    """{object path: (Keras variable name, shape as listed)} of every variable reached
    through a layer's ``variables`` list in ``path``'s saved_model.pb."""
    from tensorflow.core.protobuf import saved_model_pb2  # noqa: PLC0415

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    nodes = proto.meta_graphs[0].object_graph_def.nodes
    found = {}
    for section in ("resnet_model", "_projection_head", "supervised_head"):
        holder = next((c.node_id for c in nodes[0].children if c.local_name == "model"), 0)
        layer = next((c.node_id for c in nodes[holder].children if c.local_name == section),
                     None)
        if layer is None:
            continue
        lst = next(c.node_id for c in nodes[layer].children if c.local_name == "variables")
        for c in nodes[lst].children:
            v = nodes[c.node_id].variable
            found[f"model/{section}/variables/{c.local_name}"] = (
                v.name.split(":")[0], str([d.size for d in v.shape.dim]))
    return found
