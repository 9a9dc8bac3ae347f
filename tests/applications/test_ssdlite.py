"""SSDLite on MobileNetV3: structure against torchvision's, anchors, saving and flattening."""

import numpy as np
import pytest

from conftest import outputs, randomize_batchnorm
from keras_mbv3.applications.ssdlite import (
    SSDLiteMobileNetV3Large,
    SSDLiteMobileNetV3Small,
    anchors,
    feature_sizes,
    first_stride,
    size_anchors,
)
from keras_mbv3.backend import keras, to_numpy
from keras_mbv3.layers.flatten import flatten_model
from keras_mbv3.layers.ssdlite import SSDLiteExtraBlock, SSDLiteHead

# torchvision's ssdlite320_mobilenet_v3_large (91 classes): "num_params": 3440060 in its weights' metadata
TORCHVISION_SSDLITE_PARAMS = 3_440_060


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def head_inputs(model, maps=6):
    return [model.get_layer(f"box_head_{i}").input for i in range(maps)]


def test_large_has_torchvisions_parameter_count():
    model = SSDLiteMobileNetV3Large(91)
    assert trainable_count(model) == TORCHVISION_SSDLITE_PARAMS
    assert [o.shape[1:] for o in model.outputs] == [(3234, 4), (3234, 91)]


def test_large_matches_a_live_torchvision():
    torchvision = pytest.importorskip("torchvision")
    theirs = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    assert trainable_count(SSDLiteMobileNetV3Large(91)) == sum(p.numel() for p in theirs.parameters() if p.requires_grad)


@pytest.mark.parametrize("fn, c4, c5", [(SSDLiteMobileNetV3Large, ("expanded_conv_12_expand_hard_swish", 672),
                                         ("conv_1_hard_swish", 480)),
                                        (SSDLiteMobileNetV3Small, ("expanded_conv_8_expand_hard_swish", 288),
                                         ("conv_1_hard_swish", 288))])  # fmt: skip
def test_heads_read_c4_c5_and_the_extra_blocks(fn, c4, c5):
    """C4 is the expansion output of the block that goes from stride 16 to 32, C5 the last 1x1 conv (reduced tail)."""
    model = fn(3, input_shape=(320, 320, 3))
    inputs = head_inputs(model)
    for tensor, (layer, channels) in zip(inputs, (c4, c5)):
        assert tensor.shape[-1] == channels
        assert model.get_layer(layer).output.shape == tensor.shape
    assert [t.shape[-1] for t in inputs[2:]] == [512, 256, 256, 128]


@pytest.mark.parametrize("shape", [(320, 320, 3), (96, 160, 3), (64, 64, 3)])
def test_anchors_fit_the_heads(shape):
    model = SSDLiteMobileNetV3Small(4, input_shape=shape)
    assert [tuple(t.shape[1:3]) for t in head_inputs(model)] == feature_sizes(shape[:2])
    assert anchors(model).shape == (model.outputs[0].shape[1], 4)
    assert model.outputs[1].shape[1:] == (model.outputs[0].shape[1], 4)


@pytest.mark.parametrize("shape", [(320, 320, 3), (96, 96, 3)])
def test_a_first_map_at_stride_8_adds_c3_with_anchors_from_a_tenth_of_the_side(shape):
    plain = SSDLiteMobileNetV3Small(4, input_shape=shape)
    model = SSDLiteMobileNetV3Small(4, input_shape=shape, min_stride=8)
    inputs = head_inputs(model, maps=7)
    assert [tuple(t.shape[1:3]) for t in inputs] == feature_sizes(shape[:2], 8) == [
        tuple(-(-s // 8) for s in shape[:2]), *feature_sizes(shape[:2])]  # C3, then the six maps of plain SSDLite
    assert inputs[0].shape[-1] == 96  # Small's C3: the 96-channel expansion of the block from stride 8 to 16
    assert [t.shape[-1] for t in inputs[1:]] == [t.shape[-1] for t in head_inputs(plain)]
    assert (first_stride(model), first_stride(plain)) == (8, 16)
    found = anchors(model)
    np.testing.assert_array_equal(found, size_anchors(shape[:2], 8))
    assert found.shape == (model.outputs[0].shape[1], 4) == (len(anchors(plain)) + 6 * (shape[0] // 8) ** 2, 4)
    assert found[:, 2:].min() == pytest.approx(0.1 / np.sqrt(3)) and anchors(plain)[:, 2:].min() == pytest.approx(
        0.2 / np.sqrt(3))  # the tall/wide anchors of ratio 3 of the smallest scale  # fmt: skip
    concats = [layer for layer in model.layers if type(layer).__name__ == "Concatenate"]
    assert len(concats) == 4 and all(len(layer.input) <= 5 for layer in concats)  # XNNPACK's concat limit


def test_layers_shapes_and_part_names():
    block = SSDLiteExtraBlock(32, name="extra")
    x = keras.Input((5, 5, 16))
    assert tuple(block(x).shape) == (None, 3, 3, 32)
    assert [layer.name for layer in block.parts] == [f"extra_{part}{suffix}" for part in ("reduce", "depthwise", "expand")
                                                      for suffix in ("", "_bn", "_relu6")]  # fmt: skip
    head = SSDLiteHead(6, 4, name="box")
    assert tuple(head(keras.Input((3, 3, 8))).shape) == (None, 54, 4)
    assert [layer.name for layer in head.parts] == ["box_depthwise", "box_depthwise_bn", "box_depthwise_relu6",
                                                    "box_conv", "box_reshape"]  # fmt: skip


def test_head_rows_are_y_then_x_then_anchor(rng):
    """Row (y * W + x) * A + a of the head is channel block a of location (y, x): the anchors' order."""
    head = SSDLiteHead(2, 3, name="head")
    features = rng.normal(size=(1, 2, 3, 4)).astype("float32")
    rows = to_numpy(head(features))
    conv = features
    for layer in head.parts[:-1]:
        conv = layer(conv)
    conv = to_numpy(conv)
    for y in range(2):
        for col in range(3):
            for a in range(2):
                np.testing.assert_allclose(rows[0, (y * 3 + col) * 2 + a], conv[0, y, col, a * 3:(a + 1) * 3], rtol=1e-6)


@pytest.mark.slow
def test_save_load_and_flatten_give_the_same_outputs(tmp_path, rng):
    model = SSDLiteMobileNetV3Small(3, input_shape=(64, 64, 3), bn_momentum=0.9)
    randomize_batchnorm(model)
    x = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    expected = outputs(model, x)
    model.save(str(tmp_path / "m.keras"))
    loaded = keras.models.load_model(str(tmp_path / "m.keras"))
    for other in (loaded, flatten_model(model)):
        for got, want in zip(outputs(other, x), expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert {layer.momentum for layer in flatten_model(loaded).layers if isinstance(layer, keras.layers.BatchNormalization)} == {0.9}


@pytest.mark.parametrize("call, argument", [
    (lambda: SSDLiteMobileNetV3Small(1), "num_classes"),
    (lambda: SSDLiteMobileNetV3Small(3, input_shape=(100, 100, 3)), "input_shape"),
    (lambda: SSDLiteMobileNetV3Small(3, input_shape=(None, None, 3)), "input_shape"),
    (lambda: SSDLiteMobileNetV3Small(3, bn_momentum=1.5), "bn_momentum"),
    (lambda: SSDLiteMobileNetV3Small(3, min_stride=4), "min_stride"),
    (lambda: SSDLiteExtraBlock(1), "filters"),
    (lambda: SSDLiteHead(0, 4), "anchors"),
])  # fmt: skip
def test_bad_arguments_name_themselves(call, argument):
    with pytest.raises(ValueError, match=argument):
        call()
