"""Shapes, structure and bad arguments of the layers."""

import numpy as np
import pytest

from keras_mbv3.backend import keras, to_numpy
from keras_mbv3.layers import LRASPP, InvertedResidual, SpaceToDepth, SqueezeExcite, make_divisible
from keras_mbv3.layers.composite import sublayers


def build(layer, shape):
    inputs = keras.Input(shape)
    return keras.Model(inputs, layer(inputs))


def test_make_divisible_equals_keras_applications_depth():
    import importlib

    from keras_mbv3.backend import IS_KERAS_3

    module = "keras.src" if IS_KERAS_3 else "tf_keras.src"
    reference = importlib.import_module(f"{module}.applications.mobilenet_v3")._depth
    for value in np.arange(1, 1300, 0.25):
        for divisor in (4, 8, 16):
            assert make_divisible(value, divisor) == reference(value, divisor), (value, divisor)
    for min_value in (1, 8, 24):
        assert make_divisible(3, 8, min_value) == reference(3, 8, min_value)


@pytest.mark.parametrize("strides, expected", [(1, 32), (2, 16)])
def test_bneck_output_shape(strides, expected):
    model = build(InvertedResidual(24, kernel_size=5, strides=strides, expanded_filters=48), (32, 32, 16))
    assert tuple(model.output_shape) == (None, expected, expected, 24)


def test_odd_input_stride2_rounds_up():
    model = build(InvertedResidual(8, strides=2), (33, 17, 8))
    assert tuple(model.output_shape) == (None, 17, 9, 8)


def test_residual_only_when_shape_kept():
    kept = InvertedResidual(16, expanded_filters=32)
    changed = InvertedResidual(24, expanded_filters=32)
    strided = InvertedResidual(16, strides=2, expanded_filters=32)
    for layer in (kept, changed, strided):
        layer.build((None, 8, 8, 16))
    assert kept.add is not None and changed.add is None and strided.add is None


def test_no_expand_conv_without_expanded_filters():
    layer = InvertedResidual(16, se_ratio=0.25, name="b")
    layer.build((None, 8, 8, 16))
    names = {sub.name for sub in sublayers(layer)}
    assert "b_expand" not in names and "b_depthwise" in names
    assert layer.squeeze_excite.reduce.filters == make_divisible(16 * 0.25)


def test_dilation_keeps_resolution_and_widens_receptive_field(rng):
    x = np.zeros((1, 15, 15, 4), "float32")
    x[0, 7, 7, :] = 1.0
    dilated = InvertedResidual(4, dilation_rate=2)
    plain = InvertedResidual(4)
    for layer in (dilated, plain):
        layer.build((None, 15, 15, 4))
        layer.depthwise.set_weights([np.ones_like(w) for w in layer.depthwise.get_weights()])
    assert dilated.depthwise.dilation_rate == (2, 2)
    delta_dilated = np.abs(to_numpy(dilated(x)) - x).sum(-1)[0]
    delta_plain = np.abs(to_numpy(plain(x)) - x).sum(-1)[0]
    # The impulse reaches two pixels away with dilation 2, one pixel without.
    assert delta_dilated[7, 9] > 0 and delta_dilated[7, 8] == 0
    assert delta_plain[7, 8] > 0 and delta_plain[7, 9] == 0


@pytest.mark.parametrize("strides, padding, use_bias", [(2, "valid", False), (2, "same", True), (1, "same", False)])
def test_our_depthwise_conv_gives_keras_outputs_and_gradients(rng, strides, padding, use_bias):
    """``layers.depthwise.DepthwiseConv2D`` (on JAX's CPU a strided one has its own input gradient) is Keras' layer."""
    from conftest import backend_gradients

    from keras_mbv3.layers.depthwise import DepthwiseConv2D

    x = rng.normal(0, 1, (2, 9, 10, 4)).astype("float32")
    ours = DepthwiseConv2D(3, strides=strides, padding=padding, use_bias=use_bias, activation="relu")
    theirs = keras.layers.DepthwiseConv2D(3, strides=strides, padding=padding, use_bias=use_bias, activation="relu")
    ours.build(x.shape)
    theirs.build(x.shape)
    weights = [rng.normal(0, 1, w.shape).astype("float32") for w in theirs.get_weights()]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    np.testing.assert_allclose(to_numpy(ours(x)), to_numpy(theirs(x)), rtol=1e-6, atol=1e-6)
    for a, b in zip(backend_gradients(ours, x), backend_gradients(theirs, x)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_squeeze_excite_gates_channels(rng):
    layer = SqueezeExcite(se_ratio=0.25)
    x = rng.uniform(0, 1, (2, 6, 6, 32)).astype("float32")
    y = to_numpy(layer(x))
    gate = y / x
    # One gate value per (sample, channel), in [0, 1].
    np.testing.assert_allclose(gate, gate[:, :1, :1, :] * np.ones_like(gate), rtol=1e-5)
    assert gate.min() >= 0 and gate.max() <= 1


def test_space_to_depth_moves_patches_into_channels(rng):
    x = rng.normal(size=(2, 6, 4, 3)).astype("float32")
    y = to_numpy(build(SpaceToDepth(2), (6, 4, 3))(x))
    assert y.shape == (2, 3, 2, 12)
    for i, j in [(0, 0), (0, 1), (1, 0), (1, 1)]:  # channel (i * 2 + j) * 3 + c is pixel (2r + i, 2s + j, c)
        np.testing.assert_array_equal(y[..., (i * 2 + j) * 3:(i * 2 + j + 1) * 3], x[:, i::2, j::2])
    assert SpaceToDepth(2).compute_output_shape((None, 6, None, 3)) == (None, 3, None, 12)


def test_lraspp_matches_its_definition(rng):
    layer = LRASPP(num_classes=3, filters=8)
    low = rng.normal(size=(2, 8, 8, 4)).astype("float32")
    high = rng.normal(size=(2, 4, 4, 6)).astype("float32")
    out = to_numpy(layer([low, high]))
    assert out.shape == (2, 8, 8, 3)
    features = to_numpy(layer.cbr_relu(layer.cbr_bn(layer.cbr_conv(high), training=False)))
    scale = 1 / (1 + np.exp(-to_numpy(layer.scale_conv(high.mean(axis=(1, 2), keepdims=True)))))
    import tensorflow as tf

    up = tf.image.resize(features * scale, (8, 8), method="bilinear").numpy()
    expected = to_numpy(layer.high_classifier(up)) + to_numpy(layer.low_classifier(low))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


BAD = [
    (lambda: InvertedResidual(-8), "filters", -8),
    (lambda: InvertedResidual(0), "filters", 0),
    (lambda: InvertedResidual(16, kernel_size=4), "kernel_size", 4),
    (lambda: InvertedResidual(16, kernel_size=0), "kernel_size", 0),
    (lambda: InvertedResidual(16, strides=3), "strides", 3),
    (lambda: InvertedResidual(16, strides=0), "strides", 0),
    (lambda: InvertedResidual(16, activation="gelu"), "activation", "gelu"),
    (lambda: InvertedResidual(16, se_ratio=0.0), "se_ratio", 0.0),
    (lambda: InvertedResidual(16, se_ratio=1.5), "se_ratio", 1.5),
    (lambda: InvertedResidual(16, expanded_filters=-1), "expanded_filters", -1),
    (lambda: InvertedResidual(16, dilation_rate=0), "dilation_rate", 0),
    (lambda: InvertedResidual(16, strides=2, dilation_rate=2), "dilation_rate", 2),
    (lambda: InvertedResidual(16, bn_momentum=1.0), "bn_momentum", 1.0),
    (lambda: InvertedResidual(16, bn_momentum=0), "bn_momentum", 0),
    (lambda: SqueezeExcite(se_ratio=-0.25), "se_ratio", -0.25),
    (lambda: SqueezeExcite(gate="tanh"), "gate", "tanh"),
    (lambda: SqueezeExcite(activation="swish"), "activation", "swish"),
    (lambda: SqueezeExcite(divisor=0), "divisor", 0),
    (lambda: LRASPP(0), "num_classes", 0),
    (lambda: LRASPP(3, filters=-2), "filters", -2),
    (lambda: LRASPP(3, bn_momentum=-0.5), "bn_momentum", -0.5),
    (lambda: make_divisible(10, divisor=0), "divisor", 0),
    (lambda: SpaceToDepth(1), "block_size", 1),
    (lambda: build(LRASPP(3), (8, 8, 4)), "inputs", None),
    (lambda: LRASPP(3)([keras.Input((9, 9, 4)), keras.Input((4, 4, 6))]), "inputs", None),
]


@pytest.mark.parametrize("make, argument, value", BAD, ids=[f"{a}={v!r}" for _, a, v in BAD])
def test_bad_arguments_raise_naming_argument_and_value(make, argument, value):
    with pytest.raises(ValueError) as info:
        make()
    message = str(info.value)
    assert f"`{argument}`" in message and "allowed" in message
    if value is not None:
        assert f"{argument}={value!r}" in message


@pytest.mark.parametrize("make, argument", [
    (lambda: InvertedResidual("16"), "filters"),
    (lambda: InvertedResidual(16, kernel_size=3.0), "kernel_size"),
    (lambda: SqueezeExcite(se_ratio="big"), "se_ratio"),
    (lambda: SpaceToDepth(2.0), "block_size"),
])  # fmt: skip
def test_wrong_types_raise_type_error(make, argument):
    with pytest.raises(TypeError, match=f"`{argument}`"):
        make()
