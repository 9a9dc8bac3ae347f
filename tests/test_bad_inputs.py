"""Bad calls across the public API: each raises ValueError/TypeError naming the argument, the value and what is allowed.

The layers' and applications' own argument tables live in tests/layers/test_behaviour.py
and tests/applications/test_parity.py; this table covers the rest of the API.
"""

import sys

import numpy as np
import pytest

from conftest import assert_clear_error
from keras_mbv3.applications import (
    LRASPPMobileNetV3Large,
    LRASPPMobileNetV3Small,
    MobileNetV3Small,
    SSDLiteMobileNetV3Small,
    feature_model,
)
from keras_mbv3.backend import IS_KERAS_3, keras
from keras_mbv3.layers import HardSwish, InvertedResidual, SqueezeExcite, make_divisible
from keras_mbv3.quantization import export_tflite, quantize_model
from keras_mbv3.recipes import recipe, tasks


def tiny():
    inputs = keras.Input((32, 32, 3))
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(HardSwish()(inputs)))


def small():
    return MobileNetV3Small(weights=None, input_shape=(32, 32, 3), include_top=False)


def diverged():
    """A model whose training went to NaN: the TFLite converter crashed on one (segmentation fault)."""
    inputs = keras.Input((8, 8, 3))
    dense = keras.layers.Dense(2, name="head")
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(inputs)))
    dense.kernel.assign(np.full(dense.kernel.shape, np.nan, "float32"))
    return model


# (call, error types, argument, value or None when the value has no short repr)
BAD = [
    (lambda: feature_model(small(), levels=("P6",)), ValueError, "levels", "P6"),
    (lambda: feature_model(small(), levels=()), ValueError, "levels", ()),
    (lambda: feature_model(small(), tap="middle"), ValueError, "tap", "middle"),
    (lambda: feature_model(tiny()), ValueError, "model", None),
    (lambda: LRASPPMobileNetV3Small(0), ValueError, "num_classes", 0),
    (lambda: LRASPPMobileNetV3Small(-3), ValueError, "num_classes", -3),
    (lambda: LRASPPMobileNetV3Small(2.5), TypeError, "num_classes", 2.5),
    (lambda: LRASPPMobileNetV3Large(3, output_stride=32), ValueError, "output_stride", 32),
    (lambda: LRASPPMobileNetV3Large(3, upsample="yes"), ValueError, "upsample", "yes"),
    (lambda: LRASPPMobileNetV3Small(3, input_shape=(100, 100, 3)), ValueError, "input_shape", None),
    (lambda: LRASPPMobileNetV3Small(3, weights="/no/such.weights.h5"), ValueError, "weights", "/no/such.weights.h5"),
    (lambda: export_tflite(tiny(), quantization="int4"), ValueError, "quantization", "int4"),
    (lambda: export_tflite(tiny(), quantization="float32", input_type="int16"), ValueError, "input_type", "int16"),
    (lambda: export_tflite(tiny(), quantization="float32", output_type="bf16"), ValueError, "output_type", "bf16"),
    (lambda: export_tflite(tiny(), quantization="int8"), ValueError, "representative_dataset", None),
    (lambda: export_tflite(diverged(), quantization="float32"), ValueError, "model", None),
    (lambda: make_divisible(10, divisor=-8), ValueError, "divisor", -8),
    (lambda: InvertedResidual(16, se_ratio="x"), TypeError, "se_ratio", "x"),
    (lambda: InvertedResidual(16, bn_momentum="0.9"), TypeError, "bn_momentum", "0.9"),
    (lambda: InvertedResidual(16, bn_momentum=None), TypeError, "bn_momentum", None),
    (lambda: LRASPPMobileNetV3Small(3, bn_momentum=1.0), ValueError, "bn_momentum", 1.0),
    (lambda: LRASPPMobileNetV3Large(3, bn_momentum=True), TypeError, "bn_momentum", True),
    (lambda: SqueezeExcite(divisor=2.5), TypeError, "divisor", 2.5),
    (lambda: tasks.load("digits", task="keypoints"), ValueError, "--task", "keypoints"),
    (lambda: tasks.load("digits", task="segmentation"), ValueError, "--data", "digits"),
    (lambda: tasks.load("/no/such/folder"), ValueError, "--data", "/no/such/folder"),
    (lambda: recipe.Run("runs/x", model="medium"), ValueError, "--model", "medium"),
    (lambda: recipe.Run("runs/x", image_size=16), ValueError, "--image-size", 16),
    (lambda: recipe.Run("runs/x", image_size=64.0), TypeError, "--image-size", 64.0),
    # the application's rule, at train before any data loads: LR-ASPP joins stride-8 and stride-16 maps
    (lambda: recipe.Run("runs/x", task="segmentation", image_size=40).train(), ValueError, "--image-size", 40),
    (lambda: recipe.Run("runs/x", task="detection", image_size=80).train(), ValueError, "--image-size", 80),
    (lambda: SSDLiteMobileNetV3Small(3, input_shape=(96, 80, 3)), ValueError, "input_shape", (96, 80, 3)),
    (lambda: recipe.Run("runs/x", epochs=0), ValueError, "--epochs", 0),
    (lambda: recipe.Run("runs/x", qat_epochs=-1), ValueError, "--qat-epochs", -1),
    (lambda: recipe.Run("runs/x", batch_size=2.0), TypeError, "--batch-size", 2.0),
    (lambda: recipe.Run("runs/x", alpha=0), ValueError, "--alpha", 0),
    (lambda: recipe.Run("runs/x", weights="/no/weights.h5"), ValueError, "--weights", "/no/weights.h5"),
]
if not IS_KERAS_3:
    BAD += [
        (lambda: quantize_model(keras.Sequential([keras.layers.Dense(2)])), TypeError, "model", None),
        (lambda: quantize_model("MobileNetV3Small"), TypeError, "model", None),
    ]


@pytest.mark.parametrize("call, error, argument, value", BAD, ids=[f"{a}={v!r}" for _, _, a, v in BAD])
def test_bad_call_names_argument_value_and_what_is_allowed(call, error, argument, value):
    assert_clear_error(call, error, argument, value)


def test_quantize_model_on_tf_keras_without_tfmot_says_what_to_install(monkeypatch):
    if IS_KERAS_3:
        pytest.skip("Keras 3's engine needs no tfmot")
    monkeypatch.setitem(sys.modules, "tensorflow_model_optimization", None)  # as if not installed
    with pytest.raises(ImportError, match=r"keras-mbv3\[tfmot\]"):
        quantize_model(tiny())


def test_export_to_a_folder_or_missing_folder_is_refused(tmp_path):
    with pytest.raises(FileExistsError, match="overwrite"):
        export_tflite(tiny(), str(tmp_path), quantization="float32")
    assert list(tmp_path.iterdir()) == []
    content = export_tflite(tiny(), str(tmp_path / "new" / "m.tflite"), quantization="float32")
    assert (tmp_path / "new" / "m.tflite").read_bytes() == content
    assert np.frombuffer(content[4:8], np.uint8).tobytes() == b"TFL3"
