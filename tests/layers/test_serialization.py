"""Config round trips, whole-model save/load and mixed precision for every layer."""

import inspect
import json

import numpy as np
import pytest

from conftest import NO_XLA, outputs, randomize_batchnorm
from keras_mbv3.applications import LRASPPMobileNetV3Small, MobileNetV3Small
from keras_mbv3.applications.ssdlite import SSDLiteMobileNetV3Small
from keras_mbv3.backend import IS_KERAS_3, keras
from keras_mbv3.fit_state import build_fit_state
from keras_mbv3.layers.composite import sublayers
from keras_mbv3.layers import LRASPP, HardSigmoid, HardSwish, InvertedResidual, SpaceToDepth, SqueezeExcite
from keras_mbv3.layers.ssdlite import SSDLiteExtraBlock, SSDLiteHead

LAYERS = [
    HardSigmoid(name="hs"),
    HardSwish(name="hw"),
    SqueezeExcite(se_ratio=0.5, divisor=4, activation="hard_swish", gate="sigmoid", name="se"),
    InvertedResidual(40, kernel_size=5, strides=2, expanded_filters=72, se_ratio=0.25,
                     activation="hard_swish", bn_momentum=0.9, name="bneck"),
    InvertedResidual(16, dilation_rate=2, name="dilated"),
    LRASPP(num_classes=7, filters=32, bn_momentum=0.95, name="lraspp"),
    SpaceToDepth(block_size=4, name="s2d"),
    SSDLiteExtraBlock(64, bn_momentum=0.9, name="extra"),
    SSDLiteHead(anchors=6, values=4, bn_momentum=0.9, name="head"),
]  # fmt: skip


def constructor_args(cls):
    """The arguments the class's own constructor adds to Layer's."""
    if "__init__" not in vars(cls):
        return set()
    return {n for n in inspect.signature(cls.__init__).parameters if n not in ("self", "kwargs")}


@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: type(layer).__name__)
def test_config_round_trip(layer):
    config = layer.get_config()
    base = set(keras.layers.Layer(name="x").get_config())
    assert set(config) - base == constructor_args(type(layer))
    clone = type(layer).from_config(json.loads(json.dumps(config)))
    assert json.dumps(clone.get_config(), sort_keys=True) == json.dumps(config, sort_keys=True)


@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: type(layer).__name__)
def test_registered_under_package_name(layer):
    name = type(layer).__name__
    assert keras.saving.get_registered_name(type(layer)) == f"keras_mbv3>{name}"
    assert keras.saving.get_registered_object(f"keras_mbv3>{name}") is type(layer)


def every_layer_model(size=32):
    """A small model that uses every layer of the package."""
    image = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(16, 2, padding="same")(SpaceToDepth(2, name="s2d")(image))
    x = HardSwish()(x)
    low = InvertedResidual(16, kernel_size=3, name="block0")(x)
    x = InvertedResidual(24, kernel_size=5, strides=2, expanded_filters=64, se_ratio=0.25,
                         activation="hard_swish", name="block1")(low)  # fmt: skip
    x = InvertedResidual(24, expanded_filters=72, dilation_rate=2, name="block2")(x)
    x = SqueezeExcite(name="se")(x)
    x = HardSigmoid()(x)
    logits = LRASPP(num_classes=5, filters=16, name="head")([low, x])
    model = keras.Model(image, logits)
    randomize_batchnorm(model)
    return model


def test_every_layer_model_shapes():
    model = every_layer_model(32)
    assert tuple(model.output_shape) == (None, 16, 16, 5)
    assert model.get_layer("block1").output.shape[1:] == (8, 8, 24)


SAVE_FORMATS = ["keras", "weights.h5"] + ([] if IS_KERAS_3 else ["h5", "savedmodel"])


@pytest.mark.parametrize("fmt", SAVE_FORMATS)
def test_save_load_gives_identical_outputs(fmt, tmp_path, rng):
    model = every_layer_model()
    x = rng.uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    expected = outputs(model, x)
    if fmt == "weights.h5":
        path = str(tmp_path / "model.weights.h5")
        model.save_weights(path)
        loaded = every_layer_model()
        loaded.load_weights(path)
    else:
        path = str(tmp_path / ("model" if fmt == "savedmodel" else f"model.{fmt}"))
        model.save(path, **({"save_format": "tf"} if fmt == "savedmodel" else {}))
        loaded = keras.models.load_model(path)
    assert [type(layer).__name__ for layer in loaded.layers] == [type(layer).__name__ for layer in model.layers]
    np.testing.assert_array_equal(outputs(loaded, x), expected)


def test_names_are_stable_across_round_trips(tmp_path):
    model = every_layer_model()
    names = sorted(layer.name for layer in sublayers(model))
    path = str(tmp_path / "m.keras")
    model.save(path)
    once = keras.models.load_model(path)
    once.save(str(tmp_path / "m2.keras"))
    twice = keras.models.load_model(str(tmp_path / "m2.keras"))
    for again in (once, twice):
        assert sorted(layer.name for layer in sublayers(again)) == names


def batchnorm_momenta(model):
    return {layer.name: layer.momentum for layer in sublayers(model) if isinstance(layer, keras.layers.BatchNormalization)}


def momentum_user_model():
    image = keras.Input((32, 32, 3))
    low = InvertedResidual(16, strides=2, expanded_filters=32, se_ratio=0.25, bn_momentum=0.9, name="block0")(image)
    high = InvertedResidual(24, strides=2, expanded_filters=48, bn_momentum=0.9, name="block1")(low)
    return keras.Model(image, LRASPP(3, filters=8, bn_momentum=0.9, name="head")([low, high]))


MOMENTUM_MODELS = {
    "MobileNetV3Small": lambda: MobileNetV3Small(weights=None, input_shape=(32, 32, 3), bn_momentum=0.9),
    "LRASPPMobileNetV3Small": lambda: LRASPPMobileNetV3Small(3, input_shape=(32, 32, 3), bn_momentum=0.9),
    "SSDLiteMobileNetV3Small": lambda: SSDLiteMobileNetV3Small(3, input_shape=(64, 64, 3), bn_momentum=0.9),
    "user model": momentum_user_model,
}


@pytest.mark.slow
@pytest.mark.parametrize("make", MOMENTUM_MODELS.values(), ids=MOMENTUM_MODELS.keys())
def test_bn_momentum_survives_save_and_load(make, tmp_path):
    """Issue 11: the momentum is a constructor argument, so a reloaded model has it in every BN (stem and blocks)."""
    model = make()
    model.save(str(tmp_path / "m.keras"))
    momenta = batchnorm_momenta(keras.models.load_model(str(tmp_path / "m.keras")))
    assert momenta.keys() == batchnorm_momenta(model).keys()
    assert momenta and all(m == pytest.approx(0.9) for m in momenta.values()), momenta


def test_lraspp_model_keeps_each_parts_momentum_by_default(tmp_path):
    model = LRASPPMobileNetV3Small(3, input_shape=(32, 32, 3))
    model.save(str(tmp_path / "m.keras"))
    momenta = batchnorm_momenta(keras.models.load_model(str(tmp_path / "m.keras")))
    assert momenta.pop("lraspp_cbr_bn") == pytest.approx(0.99)
    assert {"conv_bn", "expanded_conv_depthwise_bn", "conv_1_bn"} <= momenta.keys()
    assert all(m == pytest.approx(0.999) for m in momenta.values()), momenta


def test_mixed_precision(mixed_precision, rng):
    model = every_layer_model()
    assert model.output.dtype in ("float16", keras.mixed_precision.Policy("mixed_float16").compute_dtype)
    bneck = model.get_layer("block1")
    assert all(w.dtype in ("float32", "float32_ref") or "float32" in str(w.dtype) for w in bneck.weights)
    keras.mixed_precision.set_global_policy("float32")
    reference = every_layer_model()
    reference.set_weights(model.get_weights())
    x = rng.uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    half = model.predict(x, verbose=0)
    full = reference.predict(x, verbose=0)
    assert half.dtype == np.float16
    assert np.all(np.isfinite(half))
    np.testing.assert_allclose(half.astype("float32"), full, rtol=0.05, atol=0.05 * np.abs(full).max())


@pytest.mark.slow
def test_trains_one_step(rng):
    model = every_layer_model()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), **NO_XLA)
    x = rng.uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 5, (4, 16, 16))
    before = [w.copy() for w in model.get_weights()]
    build_fit_state(model, (x, y))
    history = model.fit(x, y, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.slow
def test_a_saved_model_loads_in_a_new_process_after_only_importing_keras_from_the_package(tmp_path):
    """No custom_objects, no import of keras_mbv3.layers: importing any module of the package registers the layers."""
    import subprocess
    import sys

    path = tmp_path / "m.keras"
    save = (
        "from keras_mbv3 import keras\n"
        "from keras_mbv3.layers import HardSwish, InvertedResidual\n"
        "inputs = keras.Input((32, 32, 3))\n"
        "x = InvertedResidual(8, expanded_filters=16, se_ratio=0.25, activation='hard_swish')(HardSwish()(inputs))\n"
        f"keras.Model(inputs, x).save({str(path)!r})\n"
    )
    load = f"from keras_mbv3 import keras\nprint(keras.models.load_model({str(path)!r}).layers[-1].name)\n"
    for code in (save, load):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    assert "inverted_residual" in result.stdout
