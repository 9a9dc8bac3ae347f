"""Multi-scale features of a MobileNetV3 for detection and segmentation.

Level ``Pk`` is the last feature map whose *nominal* stride (what it would be
without dilation) is ``2**k``: for Large, ``P1``..``P5`` are the outputs of
``expanded_conv`` (16 ch), ``expanded_conv_2`` (24), ``expanded_conv_5`` (40),
``expanded_conv_11`` (112) and the final 1x1 conv ``conv_1`` (960). With
``output_stride`` below 32 the deeper levels keep its resolution.

``tap="expansion"`` takes, for ``P1``..``P4``, the output of the expand conv
(after its activation) of the block that downsamples next, as SSDLite does
(for Large ``P4`` becomes ``expanded_conv_12_expand_hard_swish``, 672 channels);
``P5``, and levels whose next block has no expand conv, keep their output tap.
"""

import dataclasses

from keras_mbv3 import checks
from keras_mbv3.backend import keras
from keras_mbv3.graph import layer_outputs
from keras_mbv3.layers import InvertedResidual
from keras_mbv3.layers.activations import HardSwish
from keras_mbv3.layers.flatten import flatten_model

LEVELS = ("P1", "P2", "P3", "P4", "P5")
TAPS = ("output", "expansion")


@dataclasses.dataclass(frozen=True)
class FeatureInfo:
    """One feature map: its level, the layer whose output it is, channels and stride."""

    level: str
    layer: str
    channels: int
    stride: int


def _candidates(model):
    """``(layer name, channels, stride, nominal stride, block, flat name)`` along the backbone, in order.

    ``flat name``: the layer whose output it is in ``flatten_model(model)`` (a block's ``output_part``). Read from
    the layers' kinds, not their names: the last plain conv before the first block (the stem; any conv before it,
    say of an ``input_tensor``'s own layers, adds its stride) and the plain conv right after the blocks
    (keras.applications' ``conv_1``) give the map of the activation that follows them.
    """
    stride, dilation = 1, 1
    found = []
    outputs = layer_outputs(model)
    conv_before = False  # a stem or last conv whose activation is the next candidate
    blocks_seen = False
    for layer in model.layers:
        if isinstance(layer, InvertedResidual):
            blocks_seen = True
            stride *= layer.strides
            dilation = layer.dilation_rate
            found.append((layer.name, layer.filters, stride, stride * dilation, layer, layer.output_part().name))
        elif isinstance(layer, keras.layers.Conv2D):
            if not blocks_seen:
                found = []  # an earlier conv's activation was not the stem's
                stride *= layer.strides[0]
            conv_before = not blocks_seen or found[-1][4] is not None  # not the conv of a classifier's top
        elif conv_before and isinstance(layer, (HardSwish, keras.layers.ReLU)):
            found.append((layer.name, outputs[layer.name].shape[-1], stride, stride * dilation, None, layer.name))
            conv_before = False
    if not blocks_seen:
        checks.fail("model", model.name, "a MobileNetV3 model of keras_mbv3.applications")
    return found


def _taps(model, tap):
    """``[(FeatureInfo, the name of its layer in flatten_model(model))]`` of ``P1``..``P5``."""
    checks.one_of("tap", tap, TAPS)
    candidates = _candidates(model)
    found = []
    for k, level in enumerate(LEVELS, start=1):
        at_level = [c for c in candidates if c[3] == 2**k]
        if not at_level:
            checks.fail("model", model.name, f"a MobileNetV3 backbone with a feature map at stride {2**k}")
        name, channels, stride, _, _, flat_name = at_level[-1]
        deeper = [c for c in candidates if c[3] > 2**k and c[4] is not None]
        if tap == "expansion" and deeper and deeper[0][4].expansion_part() is not None:
            block = deeper[0][4]
            name = flat_name = block.expansion_part().name
            channels = block.expanded_filters
        found.append((FeatureInfo(level, name, channels, stride), flat_name))
    return found


def feature_info(model, tap="output"):
    """``FeatureInfo`` of ``P1``..``P5`` of a ``keras_mbv3.applications`` MobileNetV3."""
    return [info for info, _ in _taps(model, tap)]


def feature_model(model, levels=LEVELS, tap="output"):
    """A model with the same input whose output is a dict ``{level: feature map}``.

    Args:
        model: a ``keras_mbv3.applications`` MobileNetV3 (any ``include_top``).
        levels: which of ``"P1"``..``"P5"`` to return.
        tap: ``"output"`` (block outputs) or ``"expansion"`` (SSDLite-style expand-conv taps).

    Returns:
        A functional model sharing ``model``'s layers; output ``{level: (batch, H/s, W/s, C)}``.
    """
    inputs, outputs = feature_tensors(model, levels, tap)
    return keras.Model(inputs, outputs, name=f"{model.name}_features")


def feature_tensors(model, levels=LEVELS, tap="output"):
    """``(input, {level: feature map})``: the symbolic tensors ``feature_model`` returns, to build heads on.

    With ``tap="expansion"`` they belong to ``flatten_model(model)`` (same layers, same weights).
    """
    levels = tuple(levels) if isinstance(levels, (list, tuple)) else levels
    if not isinstance(levels, tuple) or not levels:
        checks.fail("levels", levels, f"a non-empty sequence of {LEVELS}")
    for level in levels:
        checks.one_of("levels", level, LEVELS)
    taps = {info.level: (info.layer, flat_name) for info, flat_name in _taps(model, tap)}
    if tap == "expansion":
        source = flatten_model(model)
        tensors = layer_outputs(source)
        return source.input, {level: tensors[taps[level][1]] for level in levels}
    tensors = layer_outputs(model)
    return model.input, {level: tensors[taps[level][0]] for level in levels}
