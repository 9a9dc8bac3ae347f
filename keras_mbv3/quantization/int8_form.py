"""The int8 form of a flat model: hard activations that XNNPACK runs in int8.

``int8_form(model)`` rewrites every ``HardSwish`` and ``HardSigmoid`` of a
model in canonical form (``canonical.canonical_form``: flat, conv activations
that TFLite does not fuse apart) so that the TFLite
converter emits only ops XNNPACK takes in int8 (DESIGN.md, "The int8 graph"):

* ``HardSwish(x)`` becomes ``Multiply([HardGate(x), x])``, six times the true
  value. The 1/6 moves into the kernel of every conv or dense layer that reads
  the output, through the linear layers in between (padding, pooling, dropout,
  reshape, resize, and multiplies, whose scales compound). Where an output
  also reaches a layer that cannot take a scale (a residual ``Add``, a model
  output, ...), the exact ``Multiply([HardGate(x), Rescaling(1/6)(x)])`` is used.
* ``HardSigmoid(x)`` (the SE gate) becomes ``HardGate(x)`` under the same rule;
  when ``x`` comes straight from a conv with bias that feeds nothing else, the
  +3 moves into that bias and the gate is a ``ReLU(6)``, which tfmot fuses
  into the conv.
* A ``Rescaling`` of images (the preprocessing ``x / 127.5 - 1``) becomes the
  equal 1x1 ``DepthwiseConv2D`` (kernel = scale, bias = offset): one int8 op
  that XNNPACK takes (an int8 ``MUL`` by the scalar it does not).
* A 3x3 stride-2 "same" ``Conv2D`` on at most 4 channels and an even size (the
  stem on RGB images) becomes ``SpaceToDepth(2)`` and the equal 2x2 conv on 4x
  the channels; a scalar ``Rescaling`` that only feeds it moves after the
  ``SpaceToDepth``. XNNPACK's int8 conv on 3 channels takes as long as on 8, and
  its int8 depthwise conv is slow on 3 channels: at 224x224 the stem's rescale
  and conv took 0.65 ms in int8 against 0.39 ms rewritten (0.18 ms in float).

The rewritten model computes the same float outputs (up to float rounding) with
copies of the rescaled convs; every other layer object is shared.
"""

import dataclasses

import numpy as np

from keras_mbv3.backend import keras
from keras_mbv3.graph import Graph
from keras_mbv3.layers.activations import HardGate, HardSigmoid, HardSwish
from keras_mbv3.layers.composite import part
from keras_mbv3.layers.space_to_depth import SpaceToDepth

HARD_SCALE = 6.0
STEM_MAX_CHANNELS = 4

_ABSORBERS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
_LINEAR = (
    keras.layers.ZeroPadding2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.MaxPooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.Dropout,
    keras.layers.Reshape,
    keras.layers.Flatten,
    keras.layers.UpSampling2D,
    keras.layers.Resizing,
)


@dataclasses.dataclass
class _Scale:
    """A tensor holds ``factor`` times its true value, because of the hard activations in ``sources``."""

    factor: float = 1.0
    sources: frozenset = frozenset()


def int8_form(model):
    """``model`` (in canonical form, either Keras line) with its hard activations in int8 form; same float outputs."""
    g = Graph(model)
    unscaled = _choose_unscaled(g)
    bias_gates = _bias_gates(g, unscaled)
    scales = _scales(g.nodes, unscaled)
    stems = _stems(g.nodes)
    moved = _moved_rescalings(g, stems)
    return _rebuild(g, unscaled, bias_gates, scales, stems, moved)


def _is_hard(node):
    return isinstance(node.layer, (HardSwish, HardSigmoid))


def _scales(nodes, unscaled):
    """``{id(output tensor): _Scale}`` when the hard activations not in ``unscaled`` drop their 1/6."""
    scales = {}
    for node in nodes:
        inputs = [scales.get(id(t), _Scale()) for t in node.inputs]
        layer = node.layer
        if _is_hard(node) and id(node) not in unscaled:
            out = _Scale(HARD_SCALE, frozenset([id(node)]))
        elif isinstance(layer, _LINEAR) and inputs:
            out = inputs[0]
        elif isinstance(layer, keras.layers.Multiply):
            out = _Scale(
                float(np.prod([s.factor for s in inputs])), frozenset().union(*(s.sources for s in inputs))
            )
        else:
            out = _Scale()
        for tensor in node.outputs:
            scales[id(tensor)] = out
    return scales


def _violations(g, scales):
    """Hard activations whose scaled output reaches a layer that cannot absorb the scale."""
    bad = set()
    for node in g.nodes:
        if isinstance(node.layer, _ABSORBERS + _LINEAR + (keras.layers.Multiply,)):
            continue
        for tensor in node.inputs:
            bad |= scales.get(id(tensor), _Scale()).sources
    for tensor in g.outputs:
        bad |= scales.get(id(tensor), _Scale()).sources
    return bad


def _choose_unscaled(g):
    """ids of the hard-activation nodes that keep the exact 1/6 (their output cannot move it)."""
    unscaled = set()
    while True:
        bad = _violations(g, _scales(g.nodes, unscaled)) - unscaled
        if not bad:
            return unscaled
        unscaled |= bad


def _bias_gates(g, unscaled):
    """ids of the conv nodes whose bias takes the +3 of the scaled ``HardSigmoid`` that alone reads them."""
    convs = set()
    for node in g.nodes:
        if not isinstance(node.layer, HardSigmoid) or id(node) in unscaled:
            continue
        (tensor,) = node.inputs
        producer = g.producer(tensor)
        layer = producer.layer
        if (
            isinstance(layer, _ABSORBERS)
            and layer.use_bias
            and keras.activations.serialize(layer.activation) == "linear"
            and len(g.consumers(tensor)) == 1
            and not g.is_output(tensor)
        ):
            convs.add(id(producer))
    return convs


def _stems(nodes):
    """ids of the ``Conv2D`` nodes that become ``SpaceToDepth(2)`` and a 2x2 conv (see the module docstring)."""
    stems = set()
    for node in nodes:
        layer = node.layer
        if type(layer) is not keras.layers.Conv2D or len(node.inputs) != 1:
            continue
        _, height, width, channels = node.inputs[0].shape
        if (
            tuple(layer.kernel_size) == (3, 3)
            and tuple(layer.strides) == (2, 2)
            and layer.padding == "same"
            and tuple(layer.dilation_rate) == (1, 1)
            and layer.groups == 1
            and layer.data_format == "channels_last"
            and channels is not None and channels <= STEM_MAX_CHANNELS
            and height is not None and height % 2 == 0
            and width is not None and width % 2 == 0
        ):  # fmt: skip
            stems.add(id(node))
    return stems


def _moved_rescalings(g, stems):
    """ids of the scalar ``Rescaling`` nodes that only feed a stem conv: they move after its ``SpaceToDepth``."""
    moved = set()
    for node in g.nodes:
        layer = node.layer
        if not isinstance(layer, keras.layers.Rescaling):
            continue
        (tensor,) = node.outputs
        readers = g.consumers(tensor)
        if (
            np.size(layer.scale) == 1
            and np.size(layer.offset) == 1
            and len(readers) == 1
            and id(readers[0]) in stems
            and not g.is_output(tensor)
        ):
            moved.add(id(node))
    return moved


def _rebuild(g, unscaled, bias_gates, scales, stems, moved):
    def call_node(node, args, kwargs):
        layer, x = node.layer, args[0]
        if isinstance(layer, HardSwish):
            return _hard_swish(layer, x, exact=id(node) in unscaled)
        if isinstance(layer, HardSigmoid):
            gated_bias = id(g.producer(node.inputs[0])) in bias_gates
            return _hard_sigmoid(layer, x, exact=id(node) in unscaled, gated_bias=gated_bias)
        if isinstance(layer, _ABSORBERS):
            input_scale = scales.get(id(node.inputs[0]), _Scale()).factor
            shift = HARD_SCALE / 2 if id(node) in bias_gates else 0.0
            stem = id(node) in stems
            if stem and id(g.producer(node.inputs[0])) not in moved:
                x = SpaceToDepth(2, name=f"{layer.name}_space_to_depth")(x)
            changed = input_scale != 1 or shift or stem
            return _rescaled_copy(layer, x, input_scale, shift, stem) if changed else layer(x)
        if isinstance(layer, keras.layers.Rescaling) and len(x.shape) == 4:
            if id(node) in moved:
                x = SpaceToDepth(2, name=f"{layer.name}_space_to_depth")(x)
            return _rescaling_as_depthwise(layer, x)
        return layer(*args, **kwargs)

    return g.rebuild(call_node)


def _hard_swish(layer, x, exact):
    gate = HardGate(**part(layer, "gate"))(x)
    if exact:
        x = keras.layers.Rescaling(1.0 / HARD_SCALE, **part(layer, "scale"))(x)
    return keras.layers.Multiply(**part(layer, "mul"))([gate, x])


def _hard_sigmoid(layer, x, exact, gated_bias):
    if gated_bias:
        return keras.layers.ReLU(max_value=HARD_SCALE, **part(layer, "relu6"))(x)
    gate = HardGate(**part(layer, "gate"))(x)
    return keras.layers.Rescaling(1.0 / HARD_SCALE, **part(layer, "scale"))(gate) if exact else gate


def _rescaled_copy(layer, x, input_scale, bias_shift, space_to_depth=False):
    """A copy of the conv/dense ``layer`` called on ``x``, which is ``input_scale`` times larger; ``bias_shift`` added.

    With ``space_to_depth``, ``layer`` is a stem conv and ``x`` is its input after
    ``SpaceToDepth(2)``: the copy is the equal 2x2 stride-1 conv.
    """
    config, (kernel, *rest) = layer.get_config(), layer.get_weights()
    if space_to_depth:
        config.update(kernel_size=(2, 2), strides=(1, 1))
        kernel = _space_to_depth_kernel(kernel)
    copy = layer.__class__.from_config(config)
    outputs = copy(x)
    if rest:
        rest[0] = rest[0] + bias_shift
    copy.set_weights([kernel / input_scale, *rest])
    return outputs


def _space_to_depth_kernel(kernel):
    """The 2x2 kernel ``(2, 2, 4C, F)`` on ``SpaceToDepth(2)`` input equal to a 3x3 stride-2 ``kernel`` ``(3, 3, C, F)``.

    Output pixel ``i`` of the 3x3 conv reads input rows ``2i .. 2i+2``: rows
    ``2i, 2i+1`` are patch row ``i``, row ``2i+2`` is offset 0 of patch row
    ``i+1``; the 4x4 kernel's last row and column are zero. "Same" padding of
    an even size pads only the bottom and right, by one row of patches here as
    by one row of pixels there.
    """
    _, _, channels, filters = kernel.shape
    padded = np.zeros((4, 4, channels, filters), kernel.dtype)
    padded[:3, :3] = kernel
    # (patch row, row offset, patch column, column offset, c, f) -> (patch row, patch column, offsets and c, f)
    return padded.reshape(2, 2, 2, 2, channels, filters).transpose(0, 2, 1, 3, 4, 5).reshape(2, 2, 4 * channels, filters)


def _rescaling_as_depthwise(layer, x):
    """``x * scale + offset`` (per image channel) as the equal 1x1 depthwise conv with bias."""
    channels = x.shape[-1]
    conv = keras.layers.DepthwiseConv2D(1, name=layer.name, dtype=layer.dtype_policy.name)
    outputs = conv(x)
    kernel = np.broadcast_to(np.asarray(layer.scale, "float32"), (channels,)).reshape(1, 1, channels, 1)
    bias = np.broadcast_to(np.asarray(layer.offset, "float32"), (channels,))
    conv.set_weights([kernel, bias])
    return outputs
