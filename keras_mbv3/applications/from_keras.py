"""``from_keras(model)``: a keras.applications MobileNetV3 (with its weights and any head) as our model.

keras.applications' MobileNetV3 (either Keras line) and ours have the same
layers under the same names (tf_keras' ``expanded_conv_3/depthwise`` is our
``expanded_conv_3_depthwise``: ``weights.official_to_ours``), so the variant
(Large or Small, minimalistic, alpha, top, pooling, preprocessing) is read off
the model's layers and the weights copied layer by layer. Three shapes of
user model are taken:

* the keras.applications model itself (top or not, pooled or not): our
  model with the same configuration;
* a model that calls one as a nested layer (``Sequential([base, ...])``, or
  ``head(base(inputs))``): the same model with ours in its place;
* a model built on the base's tensors (``keras.Model(base.input,
  Dense(5)(base.output))``): our base without top, and the user's layers
  after it.

In the last two, our base's layers are inlined into one functional model, as if
the user had built the head on ``MobileNetV3Small(include_top=False).output``.
"""

import numpy as np

from keras_mbv3 import checks
from keras_mbv3.applications import specs
from keras_mbv3.applications.mobilenet_v3 import MobileNetV3Large, MobileNetV3Small
from keras_mbv3.applications.weights import copy_from_keras_applications, official_to_ours
from keras_mbv3.backend import keras
from keras_mbv3.graph import Graph, inline_models, is_functional
from keras_mbv3.layers.composite import weighted_leaf_layers

_BUILDERS = {"large": (specs.LARGE, MobileNetV3Large), "small": (specs.SMALL, MobileNetV3Small)}
# Width multipliers tried in this order (the published ones first): the first whose channels fit is taken.
_ALPHAS = (1.0, 0.75, 0.5, 0.35, 1.25, 1.5, 2.0) + tuple(round(a, 2) for a in np.arange(0.05, 3.0, 0.05))
_BASE_END = "conv_1_bn"  # the base's last BatchNormalization; its activation ends the base without top


def from_keras(model):
    """Our MobileNetV3 computing what a keras.applications MobileNetV3 model computes, with its weights.

    Args:
        model: a ``keras.applications.MobileNetV3Large/Small`` (either Keras line,
            any alpha, minimalistic or not, with or without top, preprocessing
            and pooling), a model that nests one, or a model built on one's
            output tensor.

    Returns:
        A functional model built from ``keras_mbv3.applications`` (outputs equal
        within float rounding), which ``quantize_model``, features, LR-ASPP and
        SSDLite backbones, ``mbv3 adapt`` and the CLI take.

    Raises:
        ValueError: naming ``model`` when it holds no keras.applications MobileNetV3.
    """
    if not isinstance(model, keras.Model):
        checks.fail("model", type(model).__name__, "a keras.applications MobileNetV3 Keras model", TypeError)
    whole = _converted(model)
    if whole is not None:
        return whole
    if is_functional(model) or isinstance(model, keras.Sequential):
        nested = [layer for layer in model.layers if isinstance(layer, keras.Model) and _converted(layer) is not None]
        if nested:
            return _flat(_with_nested_replaced(model, nested))
        if _names(model).get(_BASE_END) is not None:
            return _flat(_with_base_replaced(model))
    checks.fail("model", model.name, "a keras.applications MobileNetV3Large/Small, a model that nests one, or a model "
                "built on one's output (no layer 'conv_1_bn' of a MobileNetV3 found)")  # fmt: skip


def _names(model):
    """``{our layer name: layer}`` of the model's top-level layers."""
    return {official_to_ours(layer.name): layer for layer in model.layers}


def _configuration(model, include_top=None):
    """The builder arguments of the keras.applications MobileNetV3 ``model`` (its layers as ours), or None."""
    layers = _names(model)
    projects = [layers.get("expanded_conv_project")] + [layers.get(f"expanded_conv_{i}_project") for i in range(1, 20)]
    projects = [p.filters for p in projects if p is not None]
    kind = {len(specs.LARGE.blocks): "large", len(specs.SMALL.blocks): "small"}.get(len(projects))
    if kind is None or "conv" not in layers or "conv_1" not in layers or len(model.inputs) != 1:
        return None
    spec, builder = _BUILDERS[kind]
    minimalistic = not any("squeeze_excite" in name for name in layers)
    network = specs.minimalistic(spec) if minimalistic else spec
    alpha = next((a for a in _ALPHAS if [b.filters for b in specs.scaled_blocks(network, a)] == projects), None)
    if alpha is None:
        return None
    if include_top is None:
        include_top = isinstance(layers.get("logits"), keras.layers.Conv2D)
    config = dict(input_shape=tuple(model.input_shape[1:]), alpha=alpha, minimalistic=minimalistic,
                  include_top=include_top, weights=None, include_preprocessing=any(
                      isinstance(layer, keras.layers.Rescaling) for layer in model.layers),
                  bn_momentum=float(layers["conv_bn"].momentum), name=model.name)  # fmt: skip
    if include_top:
        dropout = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
        predictions = layers.get("predictions")
        config.update(classes=layers["logits"].filters, dropout_rate=float(dropout[0].rate) if dropout else 0.0,
                      classifier_activation=keras.activations.serialize(predictions.activation) if predictions else None)  # fmt: skip
    else:
        last = model.layers[-1]
        config["pooling"] = {keras.layers.GlobalAveragePooling2D: "avg", keras.layers.GlobalMaxPooling2D: "max"}.get(
            type(last))
    return builder, config


def _converted(model):
    """Our model for a keras.applications MobileNetV3 ``model``, weights copied; None if it is not one."""
    if not is_functional(model):
        return None
    found = _configuration(model)
    if found is None:
        return None
    builder, config = found
    ours = builder(**config)
    if set(weighted_leaf_layers(ours)) != {official_to_ours(n) for n in weighted_leaf_layers(model)}:
        return None  # more layers than the application's (a head built on it)
    copy_from_keras_applications(ours, model)
    return ours


def _flat(model):
    """``model`` with our nested base inlined: its blocks are top-level layers, as in a model built by our builders.

    ``mbv3 adapt``'s width analysis and feature taps read top-level layers, and
    backbone weights are matched by layer name. A model whose layer names clash
    once inlined stays nested.
    """
    try:
        return inline_models(model)
    except ValueError:
        return model


def _with_nested_replaced(model, nested):
    """``model`` with each nested keras.applications MobileNetV3 called as our model instead."""
    ours = {id(layer): _converted(layer) for layer in nested}
    if isinstance(model, keras.Sequential) and not is_functional(model):
        replaced = [ours.get(id(layer), layer) for layer in model.layers]
        return keras.Sequential([keras.Input(batch_shape=tuple(model.inputs[0].shape))] + replaced, name=model.name)

    def call_node(node, args, kwargs):
        return ours.get(id(node.layer), node.layer)(*args, **kwargs)

    return Graph(model).rebuild(call_node)


def _with_base_replaced(model):
    """``model`` (built on a MobileNetV3's tensors) with our base without top in place of the base's layers."""
    g = Graph(model)
    end = _activation_end(g, g.consumers(g.layer_outputs()[_names(model)[_BASE_END].name]))
    if end is None:
        checks.fail("model", model.name, "a model that reads the MobileNetV3 base only at its end")
    base_nodes = _ancestors(g, end)
    found = _configuration(keras.Model(model.inputs, end.outputs[0]), include_top=False)
    if found is None:
        checks.fail("model", model.name, "a model built on a keras.applications MobileNetV3's output")
    builder, config = found
    ours = builder(**{**config, "pooling": None, "name": f"{model.name}_base"})
    copy_from_keras_applications(ours, keras.Model(model.inputs, end.outputs[0]))
    for node in g.nodes:
        inside = [t for t in node.inputs if id(g.producer(t)) in base_nodes and g.producer(t) is not end]
        if id(node) not in base_nodes and inside:
            checks.fail("model", f"{model.name} (layer {node.layer.name!r} reads the base's inside)",
                        "a model that reads the MobileNetV3 base only at its end")  # fmt: skip
    new_input = []

    def call_node(node, args, kwargs):
        if id(node) in base_nodes:
            return ours(new_input[0]) if node is end else None
        return node.layer(*args, **kwargs)

    def on_input(node, tensor):
        new_input.append(tensor)
        return tensor

    return g.rebuild(call_node, on_input=on_input)


def _activation_end(g, readers):
    """The node that ends the activation of the base's last BN, whose output ``readers`` read; None if unclear.

    Keras 3 has one activation node; tf_keras' hard-swish reads the BN output
    twice, in its gate and in the ``Multiply`` that ends it.
    """
    for reader in readers:
        ancestors = _ancestors(g, reader)
        if all(id(other) in ancestors for other in readers):
            return reader
    return None


def _ancestors(g, node):
    """ids of ``node`` and every node it depends on."""
    found, todo = set(), [node]
    while todo:
        current = todo.pop()
        if id(current) in found:
            continue
        found.add(id(current))
        todo.extend(g.producer(t) for t in current.inputs)
    return found
