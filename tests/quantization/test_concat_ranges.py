"""Tensors read only by a concat (SSDLite's heads: conv -> reshape -> concat) get no int8 range of their own,
on both engines: the converter then gives each input the concat's scale instead of requantizing it."""

import numpy as np
import pytest

from keras_mbv3.backend import IS_KERAS_3, keras
from keras_mbv3.graph import Graph, only_feeds_a_concat
from keras_mbv3.quantization import export_tflite, quantize_model
from keras_mbv3.quantization.litert import graph_report

from conftest import fit_batchnorm_statistics

layers = keras.layers
HEADS = ("head_0", "head_1", "head_2")


def heads_model(size=16):
    """Three maps, a 1x1 conv head on each, reshaped to rows and joined as [head 0, concat(heads 1, 2)]."""
    inputs = keras.Input((size, size, 3))
    x = layers.ReLU(6.0)(layers.BatchNormalization()(layers.Conv2D(8, 3, strides=2, padding="same")(inputs)))
    maps = [x, layers.MaxPooling2D()(x), layers.MaxPooling2D(4)(x)]
    rows = [layers.Reshape((-1, 3))(layers.Conv2D(6, 1, name=name)(m)) for name, m in zip(HEADS, maps)]
    rest = layers.Concatenate(axis=1, name="rest")(rows[1:])
    return keras.Model(inputs, layers.Concatenate(axis=1, name="rows")([rows[0], rest]))


def test_only_feeds_a_concat():
    inputs = keras.Input((4, 4, 3))
    direct = layers.Conv2D(3, 1, name="direct")(inputs)
    reshaped = layers.Conv2D(3, 1, name="reshaped")(inputs)
    shared = layers.Conv2D(3, 1, name="shared")(inputs)  # also read by an Add
    output = layers.Conv2D(3, 1, name="output")(inputs)  # also a model output
    inner = layers.Concatenate(axis=1, name="inner")(
        [layers.Reshape((-1, 3))(reshaped), layers.Reshape((-1, 3))(shared), layers.Reshape((-1, 3))(output)])
    outer = layers.Concatenate(axis=1, name="outer")([layers.Reshape((-1, 3))(direct), inner])
    added = layers.Add(name="added")([shared, direct])
    model = keras.Model(inputs, [outer, added, output])
    g = Graph(model)
    outputs = g.layer_outputs()
    found = {name for name in ("direct", "reshaped", "shared", "output", "inner", "outer", "added")
             if only_feeds_a_concat(g, outputs[name])}  # fmt: skip
    assert found == {"reshaped", "inner"}  # `direct` and `shared` feed the Add too; `outer` is a model output


@pytest.fixture(scope="module")
def heads_qat():
    model = heads_model()
    images = np.random.default_rng(0).uniform(0, 255, (8, 16, 16, 3)).astype("float32")
    fit_batchnorm_statistics(model, images)
    return model, quantize_model(model, representative_dataset=images), images


def test_heads_have_no_range_of_their_own(heads_qat):
    _, qat, _ = heads_qat
    if IS_KERAS_3:
        names = {layer.name for layer in qat.layers}
        assert not {f"{head}_quant" for head in HEADS} & names and "rows_quant" in names
        return
    wrappers = {getattr(layer, "layer", layer).name: layer for layer in qat.layers}
    for head in HEADS:
        wrapper = wrappers[head]
        config = wrapper.quantize_config
        assert config.get_output_quantizers(wrapper.layer) == []
        assert config.get_activations_and_quantizers(wrapper.layer) == []
        assert len(config.get_weights_and_quantizers(wrapper.layer)) == 1  # the kernel stays quantized
    assert len(wrappers["rows"].quantize_config.get_output_quantizers(wrappers["rows"].layer)) == 1


def test_heads_export_with_the_concats_scale(heads_qat):
    _, qat, images = heads_qat
    content = export_tflite(qat, quantization="int8", input_type="float32", output_type="float32")  # raises if split
    report = graph_report(content)
    assert report["partitions"] == 1 and report["undelegated"] == {}
    assert report["ops"]["QUANTIZE"] == 1  # the float input's; none before the concats
