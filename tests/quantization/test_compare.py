"""The other tools' post-training int8 that benchmarks/ptq_vs_qat.py measures ours against."""

import numpy as np
import pytest

from keras_mbv3.applications import MobileNetV3Small
from keras_mbv3.quantization import export_tflite
from keras_mbv3.quantization.compare import ai_edge_quantizer_int8, plain_converter_int8
from keras_mbv3.quantization.litert import graph_report, interpreter, predict

from conftest import fit_batchnorm_statistics

pytestmark = pytest.mark.slow  # converts whole models: `make test`, not `make check`


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(0)
    model = MobileNetV3Small(input_shape=(32, 32, 3), weights=None, classes=4, classifier_activation=None)
    images = rng.uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    fit_batchnorm_statistics(model, images)
    return model, images


def assert_close_to_float(content, model, images):
    expected = np.asarray(model(images, training=False))
    assert np.abs(predict(interpreter(content), images) - expected).mean() < 0.1 * np.abs(expected).max()


def test_ai_edge_quantizer_static_int8_keeps_hard_swish_and_splits_the_graph(small):
    pytest.importorskip("ai_edge_quantizer", reason="the compare extra (installed in .venv, not beside tfmot)")
    model, images = small
    content = ai_edge_quantizer_int8(export_tflite(model, quantization="float32"), images)
    report = graph_report(content)
    assert report["io_types"] == {"inputs": ["int8"], "outputs": ["int8"]}
    assert report["ops"]["HARD_SWISH"] > 0 and report["partitions"] > 1  # what ours avoids
    scale, _ = interpreter(content).get_input_details()[0]["quantization"]
    assert 0.9 < scale < 1.1  # calibrated on our images: pixels 0-255 in 256 int8 steps


def test_plain_converter_int8_keeps_hard_swish_and_splits_the_graph(small):
    model, images = small
    content = plain_converter_int8(model, images)
    report = graph_report(content)
    assert report["io_types"] == {"inputs": ["float32"], "outputs": ["uint8"]}
    assert report["ops"]["HARD_SWISH"] > 0 and report["partitions"] > 1
    assert_close_to_float(content, model, images)
