"""The recipe's models: a backbone from a weights file (what `--weights PATH` does), BN momentum for the budget."""

import numpy as np
import pytest

from conftest import randomize_batchnorm
from keras_mbv3.applications import MobileNetV3Small
from keras_mbv3.backend import keras
from keras_mbv3.layers.composite import sublayers
from keras_mbv3.recipes import training


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory):
    backbone = MobileNetV3Small(weights=None, include_top=False, input_shape=(32, 32, 3))
    randomize_batchnorm(backbone)
    path = str(tmp_path_factory.mktemp("weights") / "backbone.weights.h5")
    backbone.save_weights(path)
    return backbone, path


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_model_starts_from_the_backbone_file(backbone_file, task):
    backbone, path = backbone_file
    model = training.build_model("small", 1.0, 32, 7, steps=100, task=task, weights=path)
    copied = [layer for layer in backbone.layers if layer.weights]
    assert {"conv", "expanded_conv", "expanded_conv_10", "conv_1"} <= {layer.name for layer in copied}
    for layer in copied:
        for expected, got in zip(layer.get_weights(), model.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(got, expected)
    assert model.output_shape == ((None, 7) if task == "classification" else (None, 32, 32, 7))


@pytest.mark.parametrize("steps, momentum", [(100, 0.9), (460, 1 - 10 / 460), (100_000, 0.999)])
def test_batchnorm_momentum_follows_the_number_of_steps(steps, momentum):
    model = training.build_model("small", 1.0, 32, 10, steps=steps)
    batchnorms = [layer for layer in sublayers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    assert batchnorms and all(layer.momentum == pytest.approx(momentum) for layer in batchnorms)


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_batchnorm_momentum_survives_float_keras(task, tmp_path):
    """Issue 11: ``float.keras`` reloads with the budget's momentum in every BN, the stem's and the blocks'."""
    model = training.build_model("small", 1.0, 32, 10, steps=100, task=task)
    model.save(str(tmp_path / "float.keras"))
    loaded = keras.models.load_model(str(tmp_path / "float.keras"))
    batchnorms = [layer for layer in sublayers(loaded) if isinstance(layer, keras.layers.BatchNormalization)]
    assert {"conv_bn", "expanded_conv_project_bn"} <= {layer.name for layer in batchnorms}
    assert all(layer.momentum == pytest.approx(0.9) for layer in batchnorms)
