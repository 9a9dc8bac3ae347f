"""Feature pyramids, dilation, reduced tail and LR-ASPP models."""

import numpy as np
import pytest

from keras_mbv3.applications import (
    LRASPPMobileNetV3Large,
    LRASPPMobileNetV3Small,
    MobileNetV3Large,
    MobileNetV3Small,
    feature_info,
    feature_model,
)
from keras_mbv3.backend import keras
from keras_mbv3.fit_state import build_fit_state
from conftest import NO_XLA, outputs


@pytest.mark.slow
@pytest.mark.parametrize("output_stride", [32, 16, 8])
@pytest.mark.parametrize("channels", [1, 4])
def test_feature_shapes(output_stride, channels):
    model = MobileNetV3Small(weights=None, input_shape=(64, 64, channels), include_top=False,
                             output_stride=output_stride)  # fmt: skip
    features = feature_model(model)
    out = outputs(features, np.zeros((1, 64, 64, channels), "float32"))
    info = {i.level: i for i in feature_info(model)}
    assert sorted(out) == ["P1", "P2", "P3", "P4", "P5"]
    for k, level in enumerate(["P1", "P2", "P3", "P4", "P5"], start=1):
        stride = min(2**k, output_stride)
        assert info[level].stride == stride
        assert out[level].shape == (1, 64 // stride, 64 // stride, info[level].channels)


def test_feature_levels_subset_and_expansion_taps():
    model = MobileNetV3Large(weights=None, input_shape=(64, 64, 3))
    out = outputs(feature_model(model, levels=("P3", "P4"), tap="expansion"), np.zeros((1, 64, 64, 3), "float32"))
    assert sorted(out) == ["P3", "P4"]
    block = model.get_layer("expanded_conv_12")
    # P4 of SSDLite: the expansion of the first stride-32 block, at stride 16.
    assert out["P4"].shape == (1, 4, 4, block.expanded_filters)
    with pytest.raises(ValueError, match="levels"):
        feature_model(model, levels=("P6",))
    with pytest.raises(ValueError, match="tap"):
        feature_model(model, tap="middle")


def test_feature_taps_equal_block_outputs(rng):
    model = MobileNetV3Small(weights=None, input_shape=(64, 64, 3), include_top=False)
    x = rng.uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    p3 = outputs(feature_model(model, levels=("P3",)), x)["P3"]
    name = feature_info(model)[2].layer
    direct = outputs(keras.Model(model.inputs, model.get_layer(name).output), x)
    np.testing.assert_array_equal(p3, direct)


def test_layers_of_an_input_tensor_before_the_stem_are_not_the_stem():
    """A conv and ReLU of the user's before the model (``input_tensor``): the stem is still P1. A strided one there
    halves the image first, so no map is left at stride 2: a clear error, not levels at wrong strides."""
    plain = MobileNetV3Small(weights=None, input_shape=(64, 64, 3), include_top=False)
    for strides in (1, 2):
        inputs = keras.Input((64, 64, 1))
        adapted = keras.layers.ReLU()(keras.layers.Conv2D(3, 1, strides=strides)(inputs))
        model = MobileNetV3Small(weights=None, input_tensor=adapted, include_top=False)
        if strides == 2:
            with pytest.raises(ValueError, match=r"`model`.*feature map at stride 2"):
                feature_info(model)
            continue
        assert feature_info(model) == feature_info(plain)


@pytest.mark.parametrize("output_stride", [16, 8])
def test_dilated_model_shares_weights_and_keeps_resolution(output_stride):
    dense = MobileNetV3Large(weights=None, include_top=False, input_shape=(64, 64, 3), output_stride=output_stride)
    plain = MobileNetV3Large(weights=None, include_top=False, input_shape=(64, 64, 3))
    assert dense.count_params() == plain.count_params()
    assert dense.output_shape[1] == 64 // output_stride
    dense.set_weights(plain.get_weights())


def test_reduced_tail_halves_last_stage():
    full = MobileNetV3Large(weights=None, include_top=False)
    reduced = MobileNetV3Large(weights=None, include_top=False, reduced_tail=True)
    assert reduced.get_layer("expanded_conv_14").filters == full.get_layer("expanded_conv_14").filters // 2
    assert reduced.get_layer("expanded_conv_11").filters == full.get_layer("expanded_conv_11").filters
    assert reduced.output_shape[-1] == full.output_shape[-1] // 2


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_lraspp_large_matches_torchvision():
    torchvision = pytest.importorskip("torchvision")
    theirs = torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21)
    expected = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    assert trainable_count(LRASPPMobileNetV3Large(21)) == expected


def test_lraspp_large_head_on_backbone():
    """Without torchvision: the model is the dilated keras.applications-equal backbone plus the head."""
    model = LRASPPMobileNetV3Large(21, input_shape=(224, 224, 3))
    backbone = MobileNetV3Large(weights=None, include_top=False, output_stride=16)
    head = model.get_layer("lraspp")
    assert trainable_count(model) == trainable_count(backbone) + trainable_count(head)
    assert head.low_classifier.kernel.shape[-2] == 40 and head.cbr_conv.kernel.shape[-2] == 960


@pytest.mark.slow
@pytest.mark.parametrize("fn", [LRASPPMobileNetV3Large, LRASPPMobileNetV3Small])
def test_lraspp_output_shapes(fn, rng):
    model = fn(4, input_shape=(64, 64, 3))
    x = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    assert outputs(model, x).shape == (2, 64, 64, 4)
    low_res = fn(4, input_shape=(64, 64, 3), upsample=False)
    assert tuple(low_res.output_shape) == (None, 8, 8, 4)


@pytest.mark.slow
def test_lraspp_trains(rng):
    model = LRASPPMobileNetV3Small(4, input_shape=(64, 64, 3))
    x = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), **NO_XLA)
    y = rng.integers(0, 4, (2, 64, 64))
    build_fit_state(model, (x, y))
    loss = model.fit(x, y, epochs=1, verbose=0).history["loss"][0]
    assert np.isfinite(loss)


@pytest.mark.slow
def test_lraspp_save_load(tmp_path, rng):
    model = LRASPPMobileNetV3Small(3, input_shape=(64, 64, 3))
    path = str(tmp_path / "seg.weights.h5")
    model.save_weights(path)
    again = LRASPPMobileNetV3Small(3, input_shape=(64, 64, 3), weights=path)
    x = rng.uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    np.testing.assert_array_equal(outputs(again, x), outputs(model, x))


@pytest.mark.parametrize("kwargs, argument", [
    (dict(num_classes=0), "num_classes"),
    (dict(num_classes=3, output_stride=32), "output_stride"),
    (dict(num_classes=3, input_shape=(100, 100, 3)), "input_shape"),
    (dict(num_classes=3, weights="imagenet"), "weights"),
    (dict(num_classes=3, upsample="yes"), "upsample"),
])  # fmt: skip
def test_lraspp_bad_arguments(kwargs, argument):
    with pytest.raises((ValueError, TypeError), match=f"`{argument}`"):
        LRASPPMobileNetV3Small(**kwargs)


def test_count_madds_by_hand():
    from keras_mbv3.applications.complexity import count_madds

    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same")(inputs)  # 4*4*6 * 9*4
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)  # 4*4*6 * 9
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(5)(x)  # 6*5
    assert count_madds(keras.Model(inputs, x)) == 4 * 4 * 6 * 9 * 4 + 4 * 4 * 6 * 9 + 6 * 5
