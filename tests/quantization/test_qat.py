"""quantize_model: flattening, the int8 form, training, int8 export (tf_keras line)."""

import numpy as np
import pytest

from keras_mbv3.applications import LRASPPMobileNetV3Small, MobileNetV3Small
from keras_mbv3.backend import IS_KERAS_3, keras
from keras_mbv3.layers import HardSwish, InvertedResidual, SqueezeExcite
from keras_mbv3.layers.flatten import flatten_model
from keras_mbv3.quantization import export_tflite, quantize_model, quantize_scope
from keras_mbv3.quantization.litert import graph_report, interpreter, predict

from conftest import randomize_batchnorm

legacy_only = pytest.mark.skipif(IS_KERAS_3, reason="tfmot QAT needs TF_USE_LEGACY_KERAS=1")


def test_keras3_error_says_how_to_switch():
    if not IS_KERAS_3:
        pytest.skip("the Keras 3 line only")
    inputs = keras.Input((4,))
    with pytest.raises(RuntimeError, match="TF_USE_LEGACY_KERAS=1"):
        quantize_model(keras.Model(inputs, keras.layers.Dense(2)(inputs)))


def user_model():
    """Our layers mixed with standard Keras layers, as a user would."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = HardSwish()(x)
    x = InvertedResidual(24, kernel_size=5, strides=2, expanded_filters=48, se_ratio=0.25, activation="hard_swish")(x)
    x = SqueezeExcite()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.1)(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


MODELS = {
    "small": lambda: MobileNetV3Small(weights=None, input_shape=(64, 64, 3), classes=5),
    "user": user_model,
}


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
@pytest.mark.parametrize("decompose", [False, True])
def test_flattening_keeps_float_outputs(make, decompose, rng):
    model = make()
    randomize_batchnorm(model)
    x = rng.uniform(0, 255, (4,) + tuple(model.input_shape[1:])).astype("float32")
    flat = flatten_model(model, decompose_activations=decompose)
    expected = model.predict(x, verbose=0)
    assert np.abs(flat.predict(x, verbose=0) - expected).max() / np.abs(expected).max() < 1e-5
    kinds = {type(layer).__name__ for layer in flat.layers}
    assert not kinds & {"InvertedResidual", "SqueezeExcite", "TFOpLambda", "Lambda"}
    if decompose:
        assert not kinds & {"HardSwish", "HardSigmoid"}


@pytest.fixture(scope="module")
def qat_small():
    """One QAT MobileNetV3Small, fine-tuned two epochs, and its int8 export (a QAT conversion takes ~90 s here)."""
    if IS_KERAS_3:
        pytest.skip("tfmot QAT needs TF_USE_LEGACY_KERAS=1")
    rng = np.random.default_rng(0)
    model = MobileNetV3Small(weights=None, input_shape=(64, 64, 3), classes=5)
    randomize_batchnorm(model)
    qat = quantize_model(model)
    qat.compile("adam", "sparse_categorical_crossentropy")
    x = rng.uniform(0, 255, (16, 64, 64, 3)).astype("float32")
    losses = qat.fit(x, rng.integers(0, 5, 16), epochs=2, verbose=0).history["loss"]
    return {"model": model, "qat": qat, "losses": losses, "int8": export_tflite(qat, quantization="int8")}


@legacy_only
def test_qat_model_has_no_lambda_and_trains(qat_small):
    qat = qat_small["qat"]
    names = {type(layer).__name__ for layer in qat.layers}
    assert names <= {"InputLayer", "QuantizeLayer", "QuantizeWrapperV2"}
    wrapped = {type(layer.layer).__name__ for layer in qat.layers if hasattr(layer, "layer")}
    assert {"HardGate", "Multiply", "Conv2D", "DepthwiseConv2D"} <= wrapped
    assert not wrapped & {"TFOpLambda", "Lambda", "HardSwish"}
    assert np.all(np.isfinite(qat_small["losses"]))


@legacy_only
def test_int8_export_is_integer_single_partition_and_agrees(qat_small, rng):
    content, qat = qat_small["int8"], qat_small["qat"]
    report = graph_report(content)
    assert report["partitions"] == 1
    assert not set(report["ops"]) & {"HARD_SWISH", "RELU", "RELU6", "MINIMUM"}
    assert set(report["undelegated"]) <= {"SOFTMAX"}  # the last op; it does not split the graph
    runner = interpreter(content)
    assert runner.get_input_details()[0]["dtype"] == np.int8
    assert runner.get_output_details()[0]["dtype"] == np.int8
    x = rng.uniform(0, 255, (8, 64, 64, 3)).astype("float32")
    out = predict(runner, x)
    expected = qat.predict(x, verbose=0)
    step = runner.get_output_details()[0]["quantization"][0]
    # Within a few output quantization steps on average.
    assert np.abs(out - expected).mean() < 3 * step


@legacy_only
def test_qat_model_saves_loads_and_trains_on(qat_small, tmp_path, rng):
    qat = qat_small["qat"]
    path = str(tmp_path / "qat.h5")  # tfmot QAT models do not reload from .keras (quantize_layer variables)
    qat.save(path)
    with quantize_scope():
        loaded = keras.models.load_model(path)
    x = rng.uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), qat.predict(x, verbose=0), atol=1e-6)
    loaded.compile("adam", "sparse_categorical_crossentropy")
    assert np.isfinite(loaded.fit(x, np.zeros(4), epochs=1, verbose=0).history["loss"][0])


@legacy_only
def test_quantize_lraspp_and_user_model(rng):
    for model in (LRASPPMobileNetV3Small(3, input_shape=(64, 64, 3)), user_model()):
        qat = quantize_model(model)
        x = rng.uniform(0, 255, (2,) + tuple(model.input_shape[1:])).astype("float32")
        assert qat.predict(x, verbose=0).shape == model.predict(x, verbose=0).shape


@legacy_only
def test_quantize_model_rejects_non_functional():
    with pytest.raises(TypeError, match="`model`"):
        quantize_model(keras.Sequential([keras.layers.Dense(2)]))
