"""Property-based tests (hypothesis) of the layers' arguments: shapes, config round trips, rejections."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from keras_mbv3.backend import to_numpy
from keras_mbv3.layers import InvertedResidual, SqueezeExcite, make_divisible

# derandomize: CI sees the same examples every run (a sweep of 300 random ones passed locally)
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def bneck_arguments(draw):
    strides = draw(st.sampled_from([1, 2]))
    return dict(
        filters=draw(st.integers(1, 24)),
        kernel_size=draw(st.sampled_from([1, 3, 5, 7])),
        strides=strides,
        expanded_filters=draw(st.one_of(st.none(), st.integers(1, 48))),
        se_ratio=draw(st.one_of(st.none(), st.floats(0.05, 1.0))),
        activation=draw(st.sampled_from(["relu", "hard_swish"])),
        dilation_rate=1 if strides == 2 else draw(st.sampled_from([1, 2])),
        bn_momentum=draw(st.floats(0.5, 0.999)),
    )


@SETTINGS
@given(arguments=bneck_arguments(), height=st.integers(3, 12), width=st.integers(3, 12), channels=st.integers(1, 12))
@example(  # found by hypothesis: a 1x1 stride-2 depthwise on an even width got padding (-1, 0)
    arguments=dict(filters=1, kernel_size=1, strides=2, expanded_filters=None, se_ratio=None, activation="relu",
                   dilation_rate=1, bn_momentum=0.999),
    height=3, width=4, channels=1,
)  # fmt: skip
def test_inverted_residual_shape_and_config(arguments, height, width, channels):
    layer = InvertedResidual(**arguments)
    x = np.random.default_rng(0).normal(size=(2, height, width, channels)).astype("float32")
    out = to_numpy(layer(x))
    stride = arguments["strides"]
    assert out.shape == (2, math.ceil(height / stride), math.ceil(width / stride), arguments["filters"])
    assert np.all(np.isfinite(out))
    config = layer.get_config()
    assert InvertedResidual.from_config(config).get_config() == config
    assert set(config) - {"name", "trainable", "dtype"} == set(arguments)


@SETTINGS
@given(se_ratio=st.floats(0.01, 1.0), divisor=st.integers(1, 16), channels=st.integers(1, 40))
def test_squeeze_excite_keeps_shape_and_gates_within_input(se_ratio, divisor, channels):
    layer = SqueezeExcite(se_ratio=se_ratio, divisor=divisor)
    x = np.abs(np.random.default_rng(1).normal(size=(1, 4, 4, channels))).astype("float32")
    out = to_numpy(layer(x))
    assert out.shape == x.shape
    assert np.all(out <= x + 1e-6) and np.all(out >= 0)  # a gate in [0, 1] times a non-negative input
    config = layer.get_config()
    assert SqueezeExcite.from_config(config).get_config() == config


@SETTINGS
@given(value=st.floats(1, 4096), divisor=st.integers(1, 64))
def test_make_divisible_rounds_to_a_multiple_never_more_than_ten_percent_down(value, divisor):
    result = make_divisible(value, divisor)
    assert result % divisor == 0 and result >= divisor
    assert result >= 0.9 * value


@SETTINGS
@given(
    kernel_size=st.one_of(st.integers(-4, 0), st.sampled_from([2, 4, 6, 8])),
    filters=st.integers(-8, 0),
    strides=st.integers(3, 9),
)
def test_invalid_arguments_raise_naming_them(kernel_size, filters, strides):
    for kwargs, name in ((dict(filters=8, kernel_size=kernel_size), "kernel_size"), (dict(filters=filters), "filters"),
                         (dict(filters=8, strides=strides), "strides")):  # fmt: skip
        with pytest.raises(ValueError, match=f"`{name}`"):
            InvertedResidual(**kwargs)
