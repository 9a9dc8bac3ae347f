"""The canonical form of a user's model: one flat graph of the layers that ``int8_form`` and the engines know.

Models come to quantization in many spellings of the same computation. The
canonical form rewrites them, with the same weights and float outputs:

* nested models (a keras.applications base inside a user's model, a
  ``Sequential``) are inlined, and composite layers flattened
  (``flatten_model``), so that every layer is a node of one graph;
* a conv or dense layer's activation that TFLite does not fuse into it
  (softmax, sigmoid, swish, ...) becomes an ``Activation`` layer of its own,
  so that the pre-activation values get an int8 range;
* keras.applications' hard activations become ours: Keras 3's
  ``Activation("hard_swish")`` (``hard_silu``) and ``Activation("hard_sigmoid")``,
  and the ``ReLU(6.)(x + 3.) * (1. / 6.)`` of its SE gates (Keras 3 op nodes, or
  tf_keras ``TFOpLambda`` layers) become ``HardSwish`` and ``HardSigmoid``;
  ``Multiply([x, HardSigmoid(x)])`` (tf_keras' hard-swish) becomes ``HardSwish(x)``;
* swish / silu becomes ``Multiply([x, Activation("sigmoid")(x)])``: LOGISTIC
  and MUL, which XNNPACK runs in int8 (it has no int8 swish);
* a ``Normalization`` becomes the equal per-channel ``Rescaling``, and chains
  of rescalings one ``Rescaling`` (EfficientNet's ``x / 255``, normalization,
  ``1 / sqrt(std)``), which ``int8_form`` turns into one 1x1 depthwise conv.

Measured before this rewrite (Keras 3, 64 px): ``quantize_model`` refused
keras.applications' MobileNetV3 at its first ``Activation`` and EfficientNetB0
at its ``Normalization``.
"""

import numpy as np
import tensorflow as tf

from keras_mbv3 import checks
from keras_mbv3.backend import IS_KERAS_3, keras
from keras_mbv3.graph import Graph, functional, inline_models, is_functional, is_keras_tensor
from keras_mbv3.layers.activations import HardSigmoid, HardSwish
from keras_mbv3.layers.composite import _flattening, part

_WEIGHTED = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
FUSED_ACTIVATIONS = ("linear", "relu", "relu6")  # what TFLite fuses into a conv or fully connected op
HARD_SIX = 6.0


def canonical_form(model):
    """``model`` as one flat functional graph of the layers ``int8_form`` knows; same weights and float outputs.

    Args:
        model: a functional or ``Sequential`` Keras model of the Keras line in
            use, possibly holding nested models and composite layers.

    Raises:
        TypeError: for a subclassed model (it has no graph to read).
    """
    flat = _inlined(functional(model))
    for rewrite in (_activations_apart, _hard_sigmoid_chains, _activation_layers, _hard_swish_products,
                    _normalizations, _rescaling_chains):  # fmt: skip
        flat = rewrite(flat)
    return flat


def has_graph(model):
    """Whether ``canonical_form`` can read ``model``: a functional model, or a ``Sequential`` one with inputs."""
    return is_functional(model) or (isinstance(model, keras.Sequential) and model.built and bool(model.inputs))


def _inlined(model):
    """``model`` with nested models inlined and composite layers flattened (a ``TypeError`` if not functional)."""
    with _flattening():  # a composite layer called now calls its sub-layers on the new tensors
        return inline_models(model)


def activation_name(activation):
    """The Keras name of an activation function (``"relu"``, ``"hard_silu"``, ...), or None if Keras does not know it."""
    try:
        name = keras.activations.serialize(activation)
    except ValueError:
        return None
    return name if isinstance(name, str) else name.get("config", {}).get("name", str(name))


def _unfused_activation(layer):
    """The activation of a conv or dense ``layer`` that TFLite does not fuse into it, else None."""
    if not isinstance(layer, _WEIGHTED):
        return None
    name = activation_name(layer.activation)
    return None if name is None or name in FUSED_ACTIVATIONS else name


def _activations_apart(model):
    """Each conv/dense activation that TFLite does not fuse as an ``Activation`` layer of its own."""
    g = Graph(model)
    if not any(_unfused_activation(node.layer) for node in g.nodes):
        return model

    def call_node(node, args, kwargs):
        layer, activation = node.layer, _unfused_activation(node.layer)
        if activation is None:
            return layer(*args, **kwargs)
        copy = layer.__class__.from_config({**layer.get_config(), "activation": "linear"})
        outputs = copy(args[0])
        copy.set_weights(layer.get_weights())
        return keras.layers.Activation(activation, **part(layer, activation))(outputs)

    return g.rebuild(call_node)


def _constant_op(node):
    """``("add" | "mul", number)`` for a node that adds or multiplies one tensor by a Python number, else None.

    Keras 3 records ``x + 3.0`` as an op node (``keras.ops`` ``Add``), tf_keras
    as a ``TFOpLambda`` layer (``tf.__operators__.add``).
    """
    layer = node.layer
    if IS_KERAS_3:
        kinds = {"Add": "add", "Multiply": "mul"}
        kind = kinds.get(type(layer).__name__) if type(layer).__module__.startswith("keras.src.ops") else None
    else:
        symbols = {"__operators__.add": "add", "math.add": "add", "math.multiply": "mul"}
        kind = symbols.get(getattr(layer, "symbol", None)) if type(layer).__name__ == "TFOpLambda" else None
    numbers = [a for a in node.args if isinstance(a, (int, float)) and not isinstance(a, bool)]
    if kind is None or len(node.inputs) != 1 or len(numbers) != 1:
        return None
    return kind, float(numbers[0])


def _is_relu6(layer):
    return (
        isinstance(layer, keras.layers.ReLU) and layer.max_value is not None and float(layer.max_value) == HARD_SIX
        and float(layer.negative_slope) == 0 and float(layer.threshold) == 0
    )  # fmt: skip


def _sole_reader(g, node):
    """The node that alone reads ``node``'s one output (not a model output), else None."""
    if len(node.outputs) != 1:
        return None
    readers = g.consumers(node.outputs[0])
    return readers[0] if len(readers) == 1 and not g.is_output(node.outputs[0]) else None


def _passes_through(node, args):
    """A skipped node's new output: its tensor input, which the last node of its pattern reads."""
    return next(t for t in tf.nest.flatten(args) if is_keras_tensor(t))


def _hard_sigmoid_chains(model):
    """``ReLU(6.)(x + 3.) * (1. / 6.)`` (keras.applications' SE gate) as one ``HardSigmoid``."""
    g = Graph(model)
    chains = {}  # id(multiply node) -> the ReLU node; the add and ReLU nodes are skipped
    for node in g.nodes:
        if _constant_op(node) != ("add", 3.0):
            continue
        relu = _sole_reader(g, node)
        if relu is None or not _is_relu6(relu.layer):
            continue
        scale = _sole_reader(g, relu)
        if scale is not None and (op := _constant_op(scale)) and op[0] == "mul" and np.isclose(op[1], 1 / HARD_SIX):
            chains[id(scale)] = relu
            chains[id(node)] = chains[id(relu)] = None
    if not chains:
        return model

    def call_node(node, args, kwargs):
        if id(node) not in chains:
            return node.layer(*args, **kwargs)
        relu = chains[id(node)]
        x = _passes_through(node, args)
        return x if relu is None else HardSigmoid(name=relu.layer.name, dtype=relu.layer.dtype_policy.name)(x)

    return g.rebuild(call_node)


def _hard_swish(layer, x):
    return HardSwish(name=layer.name, dtype=layer.dtype_policy.name)(x)


def _hard_sigmoid(layer, x):
    return HardSigmoid(name=layer.name, dtype=layer.dtype_policy.name)(x)


def _swish(layer, x):
    gate = keras.layers.Activation("sigmoid", **part(layer, "sigmoid"))(x)
    return keras.layers.Multiply(name=layer.name, dtype=layer.dtype_policy.name)([x, gate])


# Activation name -> its canonical layers. Keras 3's hard_sigmoid is relu6(x + 3) / 6; tf_keras' is
# clip(0.2 x + 0.5), which has no int8 form here.
ACTIVATION_RULES = {"hard_silu": _hard_swish, "hard_swish": _hard_swish, "silu": _swish, "swish": _swish}
if IS_KERAS_3:
    ACTIVATION_RULES["hard_sigmoid"] = _hard_sigmoid


def _activation_rule(layer):
    if type(layer) is not keras.layers.Activation:
        return None
    return ACTIVATION_RULES.get(activation_name(layer.activation))


def _activation_layers(model):
    """``Activation`` layers of hard-swish, hard-sigmoid and swish in their canonical layers (``ACTIVATION_RULES``)."""
    g = Graph(model)
    if not any(_activation_rule(node.layer) for node in g.nodes):
        return model

    def call_node(node, args, kwargs):
        rule = _activation_rule(node.layer)
        return rule(node.layer, args[0]) if rule else node.layer(*args, **kwargs)

    return g.rebuild(call_node)


def _hard_swish_products(model):
    """``Multiply([x, HardSigmoid(x)])`` (either order; the gate read by nothing else) as ``HardSwish(x)``."""
    g = Graph(model)
    products, gates = set(), set()
    for node in g.nodes:
        if type(node.layer) is not keras.layers.Multiply or len(node.inputs) != 2:
            continue
        for gate_tensor, other in (node.inputs, node.inputs[::-1]):
            gate = g.producer(gate_tensor)
            if isinstance(gate.layer, HardSigmoid) and gate.inputs[0] is other and _sole_reader(g, gate) is node:
                products.add(id(node))
                gates.add(id(gate))
                break
    if not products:
        return model

    def call_node(node, args, kwargs):
        if id(node) in gates:
            return args[0]
        if id(node) in products:
            return _hard_swish(node.layer, args[0][0] if isinstance(args[0], (list, tuple)) else args[0])
        return node.layer(*args, **kwargs)

    return g.rebuild(call_node)


def _normalization_affine(layer, rank):
    """``(scale, offset)`` per channel with ``layer(x) == x * scale + offset`` (a ``Normalization`` of ``rank``-D input)."""
    axis = layer.axis if isinstance(layer.axis, (list, tuple)) else (layer.axis,)
    if tuple(axis) not in ((-1,), (rank - 1,)) or getattr(layer, "invert", False):
        checks.fail("model", f"layer {layer.name!r} (Normalization) on axis {layer.axis}",
                    "a Normalization of the channels (axis=-1), not inverted, for int8")  # fmt: skip
    mean = np.reshape(np.asarray(layer.mean), -1).astype("float64")
    variance = np.reshape(np.asarray(layer.variance), -1).astype("float64")
    scale = 1.0 / np.maximum(np.sqrt(variance), keras.backend.epsilon())
    return scale, -mean * scale


def _normalizations(model):
    """Each ``Normalization`` as the equal per-channel ``Rescaling``."""
    g = Graph(model)
    if not any(type(node.layer) is keras.layers.Normalization for node in g.nodes):
        return model

    def call_node(node, args, kwargs):
        layer = node.layer
        if type(layer) is not keras.layers.Normalization:
            return layer(*args, **kwargs)
        scale, offset = _normalization_affine(layer, len(node.inputs[0].shape))
        return _rescaling(layer, scale, offset)(args[0])

    return g.rebuild(call_node)


def _rescaling(layer, scale, offset):
    """A ``Rescaling`` named after ``layer``: a number where ``scale`` and ``offset`` are one, else lists."""
    scale, offset = np.broadcast_arrays(np.asarray(scale, "float64"), np.asarray(offset, "float64"))
    if np.all(scale == scale.flat[0]) and np.all(offset == offset.flat[0]):
        scale, offset = float(scale.flat[0]), float(offset.flat[0])
    else:
        scale, offset = [float(v) for v in scale.ravel()], [float(v) for v in offset.ravel()]
    return keras.layers.Rescaling(scale, offset, name=layer.name, dtype=layer.dtype_policy.name)


def _rescaling_chains(model):
    """A ``Rescaling`` read only by another one merges into it: ``(x * a + b) * c + d == x * ac + (bc + d)``."""
    g = Graph(model)
    merged = {}  # id(second node) -> (scale, offset) of the chain ending there; the first nodes are skipped
    for node in g.nodes:
        after = _sole_reader(g, node)
        if type(node.layer) is keras.layers.Rescaling and after is not None and type(after.layer) is keras.layers.Rescaling:
            scale, offset = merged.pop(id(node), (np.asarray(node.layer.scale), np.asarray(node.layer.offset)))
            c, d = np.asarray(after.layer.scale), np.asarray(after.layer.offset)
            merged[id(node)] = None
            merged[id(after)] = (np.asarray(scale) * c, np.asarray(offset) * c + d)
    if not merged:
        return model

    def call_node(node, args, kwargs):
        if id(node) not in merged:
            return node.layer(*args, **kwargs)
        affine = merged[id(node)]
        return args[0] if affine is None else _rescaling(node.layer, *affine)(args[0])

    return g.rebuild(call_node)
