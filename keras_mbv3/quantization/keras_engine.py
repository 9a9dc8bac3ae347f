"""Quantization-aware training on Keras 3, with ``keras.quantizers`` (tfmot needs tf_keras).

``quantize(model)`` rebuilds the int8 form of a flat model (see ``int8_form``)
with the layers of ``keras_mbv3.layers.quantized``, so that every tensor that
will be int8 in TFLite is fake-quantized once, where it is made:

* a ``Conv2D``, ``DepthwiseConv2D`` or ``Dense`` becomes its ``Quant*`` twin
  with the following ``BatchNormalization`` folded into its kernel and bias
  and a following ReLU/ReLU6 fused (as TFLite fuses them), then a
  ``FakeQuant`` of the result;
* the model inputs, and the outputs of ``Add``, ``Multiply``, pooling to a
  mean, ``Rescaling``, ``Concatenate`` and standalone activations, get a
  ``FakeQuant``; a ``HardGate`` becomes ``QuantHardGate``, its output on the
  fixed range [0, 6], a sigmoid's output gets [0, 255/256] (TFLite's fixed int8
  ``LOGISTIC`` output);
* ops that keep their input's scale in TFLite (padding, max and average
  pooling, reshapes, ``SpaceToDepth``, resizing, dropout) and softmax (a fixed
  output scale) get none: a range of their own would add a requantize op;
* a ``BatchNormalization`` that follows no conv becomes the equal 1x1
  depthwise conv.

BN statistics during QAT: they are frozen, folded once from the float model's
moving statistics. QAT here is a short, low-rate fine-tune of a trained model
whose statistics are final (Jacob et al., 2018, freeze them for the end of
QAT; the recipe re-estimates them before QAT), and the int8 model is exactly
that fold. The BN scale and shift keep training as part of the kernel and bias.
Folding once also leaves no BN in the training step.
"""

import numpy as np

from keras_mbv3 import checks
from keras_mbv3.backend import keras
from keras_mbv3.graph import Graph, only_feeds_a_concat
from keras_mbv3.layers.activations import HardGate
from keras_mbv3.layers.depthwise import DepthwiseConv2D
from keras_mbv3.layers.quantized import FakeQuant, QuantConv2D, QuantDense, QuantDepthwiseConv2D, QuantHardGate
from keras_mbv3.layers.space_to_depth import SpaceToDepth
from keras_mbv3.quantization import xnnpack_limits
from keras_mbv3.quantization.calibration import GATE_INPUT_RANGE, activation_ranges

layers = keras.layers
SIGMOID_RANGE = (0.0, 255.0 / 256.0)
_SAME_SCALE = (
    layers.ZeroPadding2D, layers.MaxPooling2D, layers.AveragePooling2D, layers.GlobalMaxPooling2D, layers.Reshape,
    layers.Flatten, layers.Dropout, layers.UpSampling2D, layers.Resizing, layers.Cropping2D, SpaceToDepth,
)  # fmt: skip
_OUTPUT_QUANTIZED = (
    layers.Add, layers.Subtract, layers.Multiply, layers.Concatenate, layers.GlobalAveragePooling2D,
    layers.Rescaling,
)  # fmt: skip
_QUANT_TWINS = {
    layers.Conv2D: QuantConv2D, layers.DepthwiseConv2D: QuantDepthwiseConv2D, DepthwiseConv2D: QuantDepthwiseConv2D,
    layers.Dense: QuantDense,
}  # fmt: skip
_FUSABLE = ("relu", "relu6")


def _serialized_activation(layer, activation):
    try:
        return keras.activations.serialize(activation)
    except ValueError:  # a function Keras does not know
        checks.fail("model", f"layer {layer.name!r} ({type(layer).__name__}) with activation {activation!r}",
                    "the activations of keras.activations for QAT")  # fmt: skip


def _activation_name(layer):
    """``"relu"``/``"relu6"`` for a ReLU, ReLU(6) or relu activation layer; ``"softmax"``, ``"sigmoid"``... else None."""
    if isinstance(layer, layers.ReLU):
        plain = float(layer.negative_slope) == 0 and float(layer.threshold) == 0
        if plain and layer.max_value is None:
            return "relu"
        if plain and float(layer.max_value) == 6:
            return "relu6"
        return None
    if isinstance(layer, layers.Softmax):
        return "softmax"
    if isinstance(layer, layers.Activation):
        return _serialized_activation(layer, layer.activation)
    return None


def _only_consumer(g, node, kind):
    """The node that alone reads ``node``'s output if it is a ``kind`` (and the output is no model output)."""
    (tensor,) = node.outputs
    readers = g.consumers(tensor)
    if len(readers) == 1 and not g.is_output(tensor) and kind(readers[0]):
        return readers[0]
    return None


def _normalizes_last_axis(bn, rank):
    """Whether ``bn`` normalizes the last axis (the channels) of its ``rank``-D input."""
    axis = bn.axis if isinstance(bn.axis, int) else (bn.axis[0] if len(bn.axis) == 1 else None)
    return axis is not None and axis % rank == rank - 1


def _folds_into(layer, bn):
    """Whether ``bn`` normalizes the output channels of the conv or dense ``layer``."""
    return _normalizes_last_axis(bn, 2 if isinstance(layer, layers.Dense) else 4)


def _check_weighted(layer):
    name = f"layer {layer.name!r} ({type(layer).__name__})"
    own = _serialized_activation(layer, layer.activation)
    if own not in ("linear",) + _FUSABLE:
        checks.fail("model", f"{name} with activation {own!r}", "a linear, relu or relu6 activation for QAT")
    if getattr(layer, "data_format", "channels_last") != "channels_last" or getattr(layer, "groups", 1) != 1:
        checks.fail("model", name, "channels-last convs without groups for QAT")
    if getattr(layer, "depth_multiplier", 1) != 1:
        checks.fail("model", f"{name} with depth_multiplier={layer.depth_multiplier}",
                    "depth_multiplier=1 for QAT (per-channel int8 depthwise weights)")  # fmt: skip
    return own


def _fusions(g):
    """``{id(node): (BN node or None, activation node or None)}`` and the ids of the nodes they absorb.

    A conv or dense layer absorbs the BatchNormalization that alone reads it
    (folded into its weights) and then a ReLU/ReLU6 that alone reads the
    result; an Add or Subtract absorbs such a ReLU (TFLite fuses both).
    """
    fusions, absorbed = {}, set()
    for node in g.nodes:
        layer, bn = node.layer, None
        if type(layer) in _QUANT_TWINS:
            if _check_weighted(layer) != "linear":
                fusions[id(node)] = (None, None)
                continue
            bn = _only_consumer(g, node, lambda n: isinstance(n.layer, layers.BatchNormalization)
                                and _folds_into(layer, n.layer))  # fmt: skip
        elif not isinstance(layer, (layers.Add, layers.Subtract)):
            continue
        act = _only_consumer(g, bn or node, lambda n: _activation_name(n.layer) in _FUSABLE)
        fusions[id(node)] = (bn, act)
        absorbed |= {id(n) for n in (bn, act) if n is not None}
    return fusions, absorbed


def _batchnorm_affine(bn):
    """``(factor, shift)`` per channel with ``bn(x) == x * factor + shift`` in inference."""
    value = keras.ops.convert_to_numpy
    variance = value(bn.moving_variance)
    factor = 1.0 / np.sqrt(variance + bn.epsilon)
    if bn.scale:
        factor = factor * value(bn.gamma)
    shift = -value(bn.moving_mean) * factor
    if bn.center:
        shift = shift + value(bn.beta)
    return factor.astype("float32"), shift.astype("float32")


def _quant_twin(layer, bn, activation, x):
    """The ``Quant*`` twin of ``layer`` with ``bn`` folded in and ``activation`` fused, called on ``x``."""
    kernel, *rest = layer.get_weights()
    channel_axis = 2 if isinstance(layer, layers.DepthwiseConv2D) else -1
    channels = kernel.shape[channel_axis]
    bias = rest[0] if rest else np.zeros(channels, "float32")
    if bn is not None:
        factor, shift = _batchnorm_affine(bn)
        shape = [1] * kernel.ndim
        shape[channel_axis] = channels
        kernel, bias = kernel * factor.reshape(shape), bias * factor + shift
    config = layer.get_config()
    config.update(use_bias=True, activation=activation or config["activation"])
    twin = _QUANT_TWINS[type(layer)].from_config(config)
    outputs = twin(x)
    twin.set_weights([kernel, bias])
    return outputs


def _batchnorm_as_depthwise(bn, x):
    """A ``BatchNormalization`` that follows no conv, as the equal 1x1 depthwise conv (4D channels-last input)."""
    if len(x.shape) != 4 or not _normalizes_last_axis(bn, 4):
        checks.fail("model", f"layer {bn.name!r} (BatchNormalization) after no conv",
                    "a BatchNormalization after a Conv2D, DepthwiseConv2D or Dense, or on 4D channels-last input")  # fmt: skip
    conv = QuantDepthwiseConv2D(1, name=bn.name, dtype=bn.dtype_policy.name)
    outputs = conv(x)
    factor, shift = _batchnorm_affine(bn)
    conv.set_weights([factor.reshape(1, 1, -1, 1), shift])
    return outputs


def _same_scale(node, args, kwargs, fake_quant):
    """Ops that keep their input's int8 scale in TFLite: a range of their own would add a requantize."""
    return node.layer(*args, **kwargs)


def _output_range(node, args, kwargs, fake_quant):
    return fake_quant(node.layer(*args, **kwargs), node)


def _gate(node, args, kwargs, fake_quant):
    return QuantHardGate(name=node.layer.name)(*args, **kwargs)


def _batchnorm(node, args, kwargs, fake_quant):
    return fake_quant(_batchnorm_as_depthwise(node.layer, args[0]), node)


def _activation(node, args, kwargs, fake_quant):
    """ReLU/ReLU6 a range of their own, sigmoid TFLite's fixed [0, 255/256], softmax and linear none."""
    layer, kind = node.layer, _activation_name(node.layer)
    outputs = layer(*args, **kwargs)
    if kind == "sigmoid":
        return fake_quant(outputs, node, fixed_range=SIGMOID_RANGE)
    if kind in ("softmax", "linear"):
        return outputs
    if kind in _FUSABLE:
        return fake_quant(outputs, node)
    checks.unsupported_layer(layer, "relu, relu6, sigmoid, softmax, linear, and what keras_mbv3.quantization."
                             "canonical rewrites (hard_swish, hard_sigmoid, swish) for QAT", f" with activation {kind!r}")  # fmt: skip


# The int8 rule of each layer class that is not a conv or dense layer (those fold BN and fuse ReLUs:
# ``_fusions``) nor an Add/Subtract (which fuse a ReLU).
RULES = {
    **dict.fromkeys(_SAME_SCALE, _same_scale),
    **dict.fromkeys(_OUTPUT_QUANTIZED, _output_range),
    **dict.fromkeys((layers.ReLU, layers.Softmax, layers.Activation), _activation),
    layers.BatchNormalization: _batchnorm,
    HardGate: _gate,
}
SUPPORTED = (
    "layers that have an int8 TFLite form: " + ", ".join(sorted({c.__name__ for c in RULES} | {"Conv2D",
    "DepthwiseConv2D", "Dense"})) + ", and keras_mbv3's layers"
)  # fmt: skip


def quantize(model, images=None):
    """The Keras 3 QAT model of ``model`` (flat, in int8 form); see ``keras_mbv3.quantization.quantize_model``.

    Args:
        model: the int8 form of a flat functional model.
        images: None, or images ``(N, H, W, C)`` to start every moving range at the float model's.
    """
    g = Graph(model)
    _check_unshared(g)
    fusions, absorbed = _fusions(g)
    gate_inputs = {id(t) for node in g.nodes if isinstance(node.layer, HardGate) for t in node.inputs}
    sources = {}  # FakeQuant name -> the float layer whose output it quantizes

    def fake_quant(tensor, source_node, fixed_range=None):
        (old,) = source_node.outputs
        if fixed_range is None and only_feeds_a_concat(g, old):
            return tensor  # the concat's range covers it: no requantize of each input in the int8 graph
        name = source_node.layer.name
        floor = GATE_INPUT_RANGE if id(old) in gate_inputs else 0.0
        quant = FakeQuant(fixed_range=fixed_range, floor=floor, name=f"{name}_quant")
        if fixed_range is None:
            sources[quant.name] = name
        return quant(tensor)

    def call_node(node, args, kwargs):
        layer = node.layer
        if id(node) in absorbed:
            return args[0]  # already computed by the node it was folded or fused into
        if id(node) in fusions:
            bn, act = fusions[id(node)]
            if type(layer) in _QUANT_TWINS:
                outputs = _quant_twin(layer, bn and bn.layer, act and _activation_name(act.layer), args[0])
            else:
                outputs = layer(*args, **kwargs)
                outputs = act.layer(outputs) if act else outputs
            return fake_quant(outputs, act or bn or node)
        rule = RULES.get(type(layer))
        if rule is None:
            checks.unsupported_layer(layer, SUPPORTED)
        return rule(node, args, kwargs, fake_quant)

    qat = g.rebuild(call_node, on_input=lambda node, tensor: fake_quant(tensor, node))
    if images is not None:
        ranges = activation_ranges(model, sorted(set(sources.values())), images)  # the same order in every process
        for quant_name, source in sources.items():
            if source in ranges:
                layer = qat.get_layer(quant_name)
                layer.range_min.assign(ranges[source][0])
                layer.range_max.assign(ranges[source][1])
    return qat


def _check_unshared(g):
    """A layer called twice would get two quantized twins of one name: refuse it by name."""
    seen = set()
    for node in g.nodes:
        if id(node.layer) in seen and not node.is_input:
            checks.fail("model", f"layer {node.layer.name!r} ({type(node.layer).__name__}) called more than once",
                        "a model whose layers are each called once, for QAT")  # fmt: skip
        seen.add(id(node.layer))


def range_constraints(qat_model):
    """The ``xnnpack_limits.Constraint`` of every int8 ADD and MUL of ``qat_model``'s export."""
    g = Graph(qat_model)

    def range_of(tensor):
        """Where the tensor is fake-quantized: by a ``FakeQuant`` that reads it, by the ``QuantHardGate`` that makes it,
        or before same-scale ops."""
        node = next((n for n in g.consumers(tensor) if isinstance(n.layer, FakeQuant)), g.producer(tensor))
        while isinstance(node.layer, _SAME_SCALE) and node.inputs:
            node = g.producer(node.inputs[0])
        layer = node.layer
        if isinstance(layer, QuantHardGate):
            return xnnpack_limits.Range(*layer.OUTPUT_RANGE, fixed=True)
        if not isinstance(layer, FakeQuant):
            return None
        if layer.fixed_range is not None:
            return xnnpack_limits.Range(*layer.fixed_range, fixed=True)
        return xnnpack_limits.Range(layer.range_min, layer.range_max)

    return xnnpack_limits.constraints(g, range_of)


def is_qat_model(model):
    """Whether ``model`` holds this engine's fake quantization."""
    return any(isinstance(layer, FakeQuant) for layer in getattr(model, "layers", []))

