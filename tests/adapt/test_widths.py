"""NetAdapt's cuts: which widths a model has, and a model rebuilt at smaller widths with its weights sliced."""

import numpy as np
import pytest
from conftest import outputs, randomize_batchnorm

from keras_mbv3.adapt import channels, widths
from keras_mbv3.applications import MobileNetV3Large, MobileNetV3Small
from keras_mbv3.backend import keras, to_numpy
from keras_mbv3.layers import InvertedResidual
from keras_mbv3.layers.composite import sublayers


def small(size=32):
    model = MobileNetV3Small(weights=None, input_shape=(size, size, 3), classes=5)
    randomize_batchnorm(model)
    return model


def silence(model, space, indices, found=None):
    """Make the channels ``indices`` of ``space`` the weakest and without effect: zero in every kernel that writes
    them (so their L1 norm is lowest) and in every kernel that reads them into another space. A model without
    them computes the same outputs. ``found``: ``channels.spaces(model)``, if already known."""
    found = found or channels.spaces(model)
    leaves = {layer.name: layer for layer in sublayers(model)}
    for name, axes_of_weights in found.of_axes.items():
        layer = leaves[name]
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) or isinstance(
            layer, keras.layers.DepthwiseConv2D
        ):
            continue
        values = layer.get_weights()
        for value, axes in zip(values, axes_of_weights):
            for axis, axis_space in enumerate(axes):
                if axis_space == space:
                    index = [slice(None)] * value.ndim
                    index[axis] = indices
                    value[tuple(index)] = 0.0
        layer.set_weights(values)


def test_small_has_the_papers_widths_one_per_expansion_and_one_per_residual_chain():
    model = small()
    found, setters = widths.widths(model), widths.cuttable(model)
    named = {widths.describe(setters[space]): width for space, width in found.items()}
    assert named["expanded_conv_4 expansion"] == 240 and named["expanded_conv_3..5 output"] == 40
    assert named["expanded_conv_8..10 output"] == 96 and named["conv_1 output"] == 576
    assert sum(name.endswith("expansion") for name in named) == 10  # block 0 has no expand conv
    assert "logits output" not in named  # the classes are a model output: fixed


def test_large_first_block_shares_the_stem_width():
    model = MobileNetV3Large(weights=None, input_shape=(32, 32, 3), classes=5)
    assert sorted(widths.cuttable(model)["conv"]) == [("conv", "filters"), ("expanded_conv", "filters")]


@pytest.mark.parametrize("cut", ["expanded_conv_4 expansion", "expanded_conv_3..5 output", "conv output",
                                 "conv_1 output", "conv_2 output"])  # fmt: skip
@pytest.mark.slow
def test_cutting_silenced_channels_keeps_the_outputs(cut, rng):
    model = small()
    found = channels.spaces(model)  # read once (each reading flattens the model), as the search does
    setters = widths.cuttable(model, found)
    (space,) = [s for s in setters if widths.describe(setters[s]) == cut]
    width = found.sizes[space]
    removed = rng.choice(width, 8, replace=False)
    silence(model, space, removed, found)
    x = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    cut_model = widths.rebuild(model, {space: width - 8}, setters=setters, found=found)
    assert widths.widths(cut_model)[space] == width - 8
    assert cut_model.count_params() < model.count_params()
    np.testing.assert_allclose(to_numpy(cut_model(x)), to_numpy(model(x)), atol=1e-5)


def test_a_user_model_of_our_layers_and_dense_layers_is_cut_too(rng):
    inputs = keras.Input((16, 16, 8))
    x = InvertedResidual(8, expanded_filters=32, se_ratio=0.25, name="block")(inputs)
    x = InvertedResidual(8, expanded_filters=24, name="block_1")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(16, activation="relu", name="hidden")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(x))
    randomize_batchnorm(model)
    setters = widths.cuttable(model)
    assert {widths.describe(v) for v in setters.values()} == {"block expansion", "block_1 expansion"}
    silence(model, "block_expand", [1, 5, 7, 30, 31, 2, 3, 4])
    x = rng.normal(size=(2, 16, 16, 8)).astype("float32")
    cut = widths.rebuild(model, {"block_expand": 24})
    np.testing.assert_allclose(to_numpy(cut(x)), to_numpy(model(x)), atol=1e-5)
    assert cut.get_layer("block").squeeze_excite.reduce.filters == 8  # re-derived from the 24 channels


def test_the_kept_channels_are_those_of_highest_l1_norm():
    scores = np.array([0.5, 3.0, 0.1, 2.0, 1.0])
    np.testing.assert_array_equal(channels.keep(scores, 3), [1, 3, 4])


def test_a_width_that_is_not_cuttable_or_grows_is_refused():
    model = small()
    with pytest.raises(ValueError, match="new_widths.*logits"):
        widths.rebuild(model, {"logits": 4})
    with pytest.raises(ValueError, match="more than the source"):
        channels.transfer(model, MobileNetV3Small(weights=None, input_shape=(32, 32, 3), classes=5, alpha=1.25))


def test_models_that_mix_channels_without_weights_are_refused():
    inputs = keras.Input((8, 8, 4))
    joined = keras.layers.Concatenate(name="joined")([inputs, keras.layers.Conv2D(4, 1, name="conv")(inputs)])
    with pytest.raises(ValueError, match="`model`.*'joined'"):
        channels.spaces(keras.Model(inputs, joined))


def test_a_cut_that_would_join_a_residual_is_known_and_refused():
    """Small's expanded_conv_6 reads 40 channels and writes 48: at 40 out, Keras would add a new residual."""
    model = small()
    chain = [s for s, v in widths.cuttable(model).items() if widths.describe(v) == "expanded_conv_6..7 output"][0]
    assert widths.joins_a_residual(model, {chain: 40}) and not widths.joins_a_residual(model, {chain: 32})
    with pytest.raises(ValueError, match="residual add appeared"):
        widths.rebuild(model, {chain: 40})


@pytest.mark.slow
def test_a_cut_model_saves_loads_flattens_and_quantizes_to_one_int8_partition(tmp_path, rng):
    """The adapted model is an ordinary functional model of our layers, on either Keras line and its engine."""
    from keras_mbv3.layers.flatten import flatten_model
    from keras_mbv3.quantization import export_tflite, quantize_model
    from keras_mbv3.quantization.litert import graph_report

    model = small()
    setters = widths.cuttable(model)
    named = {widths.describe(setters[space]): space for space in setters}
    cut = widths.rebuild(model, {named["expanded_conv_4 expansion"]: 120, named["expanded_conv_3..5 output"]: 24,
                                 named["conv_2 output"]: 512})  # fmt: skip
    x = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    expected = outputs(cut, x)  # eager calls: a traced predict per model cost 1-2 s here
    cut.save(tmp_path / "cut.keras")
    loaded = keras.models.load_model(tmp_path / "cut.keras")
    assert widths.widths(loaded)[named["expanded_conv_3..5 output"]] == 24
    for other in (loaded, flatten_model(cut)):
        np.testing.assert_allclose(outputs(other, x), expected, atol=1e-5)
    report = graph_report(export_tflite(quantize_model(loaded, representative_dataset=x), quantization="int8"))
    assert report["partitions"] == 1 and not report["float_ops"]
