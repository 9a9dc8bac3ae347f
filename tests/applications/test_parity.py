"""MobileNetV3Large/Small against keras.applications: parameters, weights, outputs, errors."""

import importlib
import itertools

import numpy as np
import pytest

from conftest import outputs
from helpers import random_reference, relative_error
from keras_mbv3.applications import MobileNetV3Large, MobileNetV3Small, preprocess_input
from keras_mbv3.applications import weights as weight_files
from keras_mbv3.backend import IS_KERAS_3, keras

OURS = {"MobileNetV3Large": MobileNetV3Large, "MobileNetV3Small": MobileNetV3Small}
CONFIGS = [
    (name, alpha, minimalistic, include_top)
    for name, alpha, minimalistic, include_top in itertools.product(OURS, (0.5, 0.75, 1.0, 1.25), (False, True), (True, False))
    if not minimalistic or alpha in (0.75, 1.0)
]


@pytest.mark.slow
@pytest.mark.parametrize("name, alpha, minimalistic, include_top", CONFIGS)
def test_parameter_count_equals_keras_applications(name, alpha, minimalistic, include_top):
    kwargs = dict(weights=None, alpha=alpha, minimalistic=minimalistic, include_top=include_top)
    theirs = getattr(keras.applications, name)(**kwargs).count_params()
    ours = OURS[name](**kwargs)
    assert ours.count_params() == theirs
    keras.backend.clear_session()


@pytest.mark.slow
@pytest.mark.parametrize("name", OURS)
def test_classes_and_pooling_parameter_counts(name):
    for kwargs in (dict(classes=10), dict(include_top=False, pooling="avg"), dict(include_top=False, pooling="max")):
        theirs = getattr(keras.applications, name)(weights=None, **kwargs)
        ours = OURS[name](weights=None, **kwargs)
        assert ours.count_params() == theirs.count_params()
        assert tuple(ours.output_shape) == tuple(theirs.output_shape)


def test_weight_table_equals_keras_applications():
    module = importlib.import_module(("keras.src" if IS_KERAS_3 else "tf_keras.src") + ".applications.mobilenet_v3")
    assert weight_files.WEIGHTS_HASHES == module.WEIGHTS_HASHES
    assert weight_files.BASE_WEIGHT_PATH.rstrip("/") == module.BASE_WEIGHT_PATH.rstrip("/")


@pytest.mark.parametrize("name, kwargs", [
    ("MobileNetV3Large", dict(include_top=True)),
    ("MobileNetV3Large", dict(include_top=False)),
    ("MobileNetV3Small", dict(include_top=True)),
    ("MobileNetV3Small", dict(include_top=False, alpha=0.75)),
    ("MobileNetV3Small", dict(include_top=True, minimalistic=True)),
])  # fmt: skip
@pytest.mark.slow
def test_official_h5_layout_gives_keras_applications_outputs(name, kwargs, tmp_path, rng):
    reference = random_reference(name, input_shape=(224, 224, 3), **kwargs)
    path = str(tmp_path / "official.h5")
    reference.save_weights(path)  # exactly the layout of the published files
    ours = OURS[name](weights=path, input_shape=(224, 224, 3), **kwargs)
    x = rng.uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    assert relative_error(outputs(ours, x), outputs(reference, x)) < 1e-5


@pytest.mark.slow
def test_own_saved_weights_load(tmp_path, rng):
    reference = random_reference("MobileNetV3Small", input_shape=(96, 96, 3))
    official = str(tmp_path / "official.h5")
    reference.save_weights(official)
    model = MobileNetV3Small(weights=official, input_shape=(96, 96, 3))
    own = str(tmp_path / "own.weights.h5")
    model.save_weights(own)
    again = MobileNetV3Small(weights=own, input_shape=(96, 96, 3))
    x = rng.uniform(0, 255, (1, 96, 96, 3)).astype("float32")
    np.testing.assert_array_equal(outputs(again, x), outputs(model, x))


def test_wrong_weights_file_names_file(tmp_path):
    path = str(tmp_path / "large.h5")
    random_reference("MobileNetV3Large", include_top=False).save_weights(path)
    with pytest.raises(ValueError, match="large.h5"):
        MobileNetV3Small(weights=path, include_top=False)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(open(path, "rb").read()[:5000])
    with pytest.raises(ValueError, match="truncated.h5"):
        MobileNetV3Large(weights=str(truncated), include_top=False)


def test_preprocess_input_is_identity():
    x = np.arange(12.0).reshape(1, 2, 2, 3)
    assert preprocess_input(x) is x


def test_layer_names_follow_keras_applications():
    ours = {layer.name for layer in MobileNetV3Small(weights=None).layers}
    assert {"conv", "conv_bn", "expanded_conv", "expanded_conv_10", "conv_1", "conv_1_bn", "conv_2", "logits",
            "predictions"} <= ours  # fmt: skip
    assert [layer.name for layer in MobileNetV3Large(weights=None).layers if layer.name.startswith("expanded_conv")] == [
        "expanded_conv"
    ] + [f"expanded_conv_{i}" for i in range(1, 15)]


BAD = [
    (dict(pooling="mean", include_top=False), "pooling", "mean"),
    (dict(output_stride=4), "output_stride", 4),
    (dict(output_stride=64), "output_stride", 64),
    (dict(alpha=0), "alpha", 0),
    (dict(alpha=-1.0), "alpha", -1.0),
    (dict(alpha="wide"), "alpha", "wide"),
    (dict(weights="imagenet", classes=10), "classes", 10),
    (dict(weights="imagenet", alpha=0.5), "alpha", 0.5),
    (dict(weights="imagenet", alpha=0.75, minimalistic=True), "alpha", 0.75),
    (dict(weights="imagenet", classifier_activation="relu"), "classifier_activation", "relu"),
    (dict(weights="imagenet", reduced_tail=True), "reduced_tail", True),
    (dict(weights="/no/such/file.h5"), "weights", "/no/such/file.h5"),
    (dict(weights="imagenet21k"), "weights", "imagenet21k"),
    (dict(input_shape=(16, 224, 3)), "input_shape", (16, 224, 3)),
    (dict(input_shape=(224, 224)), "input_shape", (224, 224)),
    (dict(classes=0), "classes", 0),
    (dict(dropout_rate=1.0), "dropout_rate", 1.0),
    (dict(minimalistic="yes"), "minimalistic", "yes"),
    (dict(bn_momentum=1.5), "bn_momentum", 1.5),
    (dict(bn_momentum="high"), "bn_momentum", "high"),
]


@pytest.mark.parametrize("kwargs, argument, value", BAD, ids=[f"{a}={v!r}" for _, a, v in BAD])
@pytest.mark.parametrize("fn", [MobileNetV3Large, MobileNetV3Small], ids=["Large", "Small"])
def test_bad_arguments(fn, kwargs, argument, value):
    kwargs = {"weights": None, **kwargs}
    with pytest.raises((ValueError, TypeError)) as info:
        fn(**kwargs)
    assert f"`{argument}`" in str(info.value) and f"{argument}={value!r}" in str(info.value)


def test_input_tensor():
    tensor = keras.Input((64, 64, 3))
    model = MobileNetV3Small(weights=None, input_tensor=tensor, include_top=False)
    assert tuple(model.output_shape) == (None, 2, 2, 576)
    with pytest.raises(ValueError, match="input_shape"):
        MobileNetV3Small(weights=None, input_tensor=tensor, input_shape=(96, 96, 3))
    with pytest.raises(ValueError, match="input_tensor"):
        MobileNetV3Small(weights=None, input_tensor=np.zeros((1, 64, 64, 3)))
