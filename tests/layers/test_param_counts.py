"""Each InvertedResidual has the parameter count of the keras.applications block it replaces.

The blocks are read from keras.applications models of the Keras line in use
(Keras 3 names such as ``expanded_conv_3_depthwise``, tf_keras names such as
``expanded_conv_3/depthwise``); nothing about them is typed into the test.
"""

import re

import pytest

from keras_mbv3.backend import IS_KERAS_3, keras
from keras_mbv3.layers import InvertedResidual
from keras_mbv3.layers.composite import weighted_leaf_layers
from keras_mbv3.layers.inverted_residual import correct_pad

if IS_KERAS_3:
    BLOCK_LAYER = re.compile(r"^expanded_conv_(?:(\d+)_)?(.+)$")
    PART = {"expand": "expand", "depthwise": "depthwise", "depthwise_pad": "depthwise_pad",
            "project": "project", "se": "squeeze_excite_conv"}  # fmt: skip
else:
    BLOCK_LAYER = re.compile(r"^expanded_conv(?:_(\d+))?/(.+)$")
    PART = {"expand": "expand", "depthwise": "depthwise", "depthwise_pad": "depthwise/pad",
            "project": "project", "se": "squeeze_excite/Conv"}  # fmt: skip


def application_blocks(model):
    """{block index: {part name: layer}} of a keras.applications MobileNetV3."""
    blocks = {}
    for layer in model.layers:
        match = BLOCK_LAYER.match(layer.name)
        if match:
            blocks.setdefault(int(match.group(1) or 0), {})[match.group(2)] = layer
    return blocks


def consumers(model, layer):
    outputs = [layer.output]
    found = []
    for other in model.layers:
        try:
            inputs = other.input
        except (AttributeError, ValueError):
            continue
        inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        if any(t is o for t in inputs for o in outputs):
            found.append(other)
    return found


def block_activation(model, parts):
    """"relu" if the depthwise BN feeds a plain ReLU, else "hard_swish"."""
    bn = parts[PART["depthwise"] + ("_bn" if IS_KERAS_3 else "/BatchNorm")]
    for layer in consumers(model, bn):
        if isinstance(layer, keras.layers.ReLU) and layer.max_value is None:
            return "relu"
    return "hard_swish"


def block_as_layer(model, index, parts):
    depthwise = parts[PART["depthwise"]]
    expand = parts.get(PART["expand"])
    in_channels = (expand or depthwise).input.shape[-1]
    layer = InvertedResidual(
        filters=parts[PART["project"]].filters,
        kernel_size=depthwise.kernel_size[0],
        strides=depthwise.strides[0],
        expanded_filters=expand.filters if expand else None,
        se_ratio=0.25 if PART["se"] in parts else None,
        activation=block_activation(model, parts),
        name="expanded_conv" if index == 0 else f"expanded_conv_{index}",
    )
    layer.build((None, 32, 32, in_channels))
    return layer


@pytest.fixture(scope="module", params=["MobileNetV3Large", "MobileNetV3Small"])
def application(request):
    return getattr(keras.applications, request.param)(weights=None, input_shape=(224, 224, 3))


def test_every_block_has_the_application_parameter_count(application):
    blocks = application_blocks(application)
    assert len(blocks) >= 11
    kinds = set()
    for index, parts in sorted(blocks.items()):
        ours = block_as_layer(application, index, parts)
        theirs = sum(layer.count_params() for layer in parts.values())
        assert ours.count_params() == theirs, f"block {index}"
        kinds.update(
            {"no expand"} if ours.expanded_filters is None else {"expand"}
        )
        kinds.update({"se"} if ours.se_ratio else set())
        kinds.update({f"stride {ours.strides}", f"{ours.kernel_size}x{ours.kernel_size}", ours.activation})
        kinds.update({"residual"} if ours.add is not None else set())
    # The comparison covered every kind of block the issue names.
    assert {"no expand", "expand", "se", "stride 2", "5x5", "hard_swish", "relu"} <= kinds


def test_weighted_sublayer_names_match_keras3_application(application):
    if not IS_KERAS_3:
        pytest.skip("tf_keras.applications uses the tf.keras 2 names (mapped by the applications)")
    for index, parts in application_blocks(application).items():
        ours = block_as_layer(application, index, parts)
        ours_named = set(weighted_leaf_layers(ours))
        prefix = "expanded_conv_" if index == 0 else f"expanded_conv_{index}_"
        theirs_named = {prefix + name for name, layer in parts.items() if layer.weights}
        assert ours_named == theirs_named


@pytest.mark.parametrize("size", [224, 225, 57, None])
def test_stride2_padding_matches_application(size):
    model = keras.applications.MobileNetV3Small(weights=None, input_shape=(size, size, 3), include_top=False)
    for index, parts in application_blocks(model).items():
        pad = parts.get(PART["depthwise_pad"])
        if pad is None:
            continue
        depthwise = parts[PART["depthwise"]]
        spatial = tuple(pad.input.shape[1:3])
        assert correct_pad(spatial, depthwise.kernel_size[0]) == tuple(map(tuple, pad.padding))
