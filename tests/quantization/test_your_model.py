"""Issue 21: the Keras models users already have. keras.applications' MobileNetV3 (and MobileNetV2,
EfficientNetB0, ResNet50) through quantize_model and post-training int8; from_keras; the canonical form."""

import numpy as np
import pytest

from keras_mbv3.applications import MobileNetV3Large, MobileNetV3Small, from_keras
from keras_mbv3.backend import IS_KERAS_3, keras
from keras_mbv3.checks import UnsupportedLayerError
from keras_mbv3.layers import HardSigmoid, HardSwish
from keras_mbv3.quantization import export_tflite, quantize_model
from keras_mbv3.quantization.canonical import canonical_form
from keras_mbv3.quantization.litert import graph_report, interpreter, predict

from conftest import outputs, randomize_batchnorm


pytestmark = pytest.mark.slow  # trains, converts or starts processes: `make test`, not `make check`


SIZE = 32
apps = keras.applications


def images(rng, count=8, size=SIZE):
    return rng.uniform(0, 255, (count, size, size, 3)).astype("float32")


def nested_head(base, classes=4):
    """A user's classifier on a keras.applications base without top, called as a nested model."""
    inputs = keras.Input(base.input_shape[1:])
    x = keras.layers.GlobalAveragePooling2D()(base(inputs))
    x = keras.layers.Dropout(0.2)(x)
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x))


def flat_head(base, classes=4):
    """A user's classifier built on the base's output tensor (its layers are the model's own)."""
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    return keras.Model(base.input, keras.layers.Dense(classes, activation="softmax")(x))


# keras.applications MobileNetV3s as users bring them: every alpha kind, minimalistic, top or not,
# preprocessing or not, and a head of their own.
KERAS_MODELS = {
    "small": lambda: apps.MobileNetV3Small(input_shape=(SIZE, SIZE, 3), weights=None, classes=5),
    "large-0.75-no-top-avg": lambda: apps.MobileNetV3Large(input_shape=(SIZE, SIZE, 3), weights=None, alpha=0.75,
                                                            include_top=False, pooling="avg"),  # fmt: skip
    "small-minimalistic-no-preprocessing": lambda: apps.MobileNetV3Small(
        input_shape=(SIZE, SIZE, 3), weights=None, minimalistic=True, include_preprocessing=False, classes=3),
    "large-1.25-no-top": lambda: apps.MobileNetV3Large(input_shape=(SIZE, SIZE, 3), weights=None, alpha=1.25,
                                                       include_top=False),  # fmt: skip
    "small-nested-head": lambda: nested_head(apps.MobileNetV3Small(input_shape=(SIZE, SIZE, 3), weights=None,
                                                                   include_top=False, alpha=0.5)),  # fmt: skip
    "large-flat-head": lambda: flat_head(apps.MobileNetV3Large(input_shape=(SIZE, SIZE, 3), weights=None,
                                                               include_top=False, minimalistic=True)),  # fmt: skip
    "small-sequential-head": lambda: keras.Sequential([
        keras.Input((SIZE, SIZE, 3)), apps.MobileNetV3Small(input_shape=(SIZE, SIZE, 3), weights=None, include_top=False),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)]),  # fmt: skip
}


def relative_difference(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.mark.parametrize("kind", KERAS_MODELS)
def test_from_keras_gives_our_model_with_the_same_outputs(kind, rng):
    model = KERAS_MODELS[kind]()
    randomize_batchnorm(model)
    ours = from_keras(model)
    x = images(rng, 4)
    assert relative_difference(outputs(ours, x), outputs(model, x)) < 1e-5
    layer_classes = {type(layer).__name__ for layer in ours.layers}
    # One flat model of our blocks, a user head included: adapt and backbone weights read top-level layers.
    assert "InvertedResidual" in layer_classes and not any(isinstance(layer, keras.Model) for layer in ours.layers)


def test_from_keras_keeps_the_configuration():
    model = apps.MobileNetV3Large(input_shape=(SIZE, SIZE, 3), weights=None, alpha=0.75, classes=7,
                                  dropout_rate=0.1, classifier_activation=None)  # fmt: skip
    ours = from_keras(model)
    assert ours.count_params() == model.count_params() and ours.output_shape == (None, 7)
    reference = MobileNetV3Large(input_shape=(SIZE, SIZE, 3), weights=None, alpha=0.75, classes=7, dropout_rate=0.1,
                                 classifier_activation=None)  # fmt: skip
    assert [layer.name for layer in ours.layers[1:]] == [layer.name for layer in reference.layers[1:]]
    assert ours.get_layer("dropout").rate == 0.1


def test_from_keras_refuses_a_model_without_mobilenet_v3():
    inputs = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs), name="mine")
    with pytest.raises(ValueError, match=r"`model`.*mine.*allowed: a keras.applications MobileNetV3"):
        from_keras(model)


OURS = {  # KERAS_MODELS[kind] built by keras_mbv3: the op-for-op test quantizes and exports both
    "small": lambda: MobileNetV3Small(input_shape=(SIZE, SIZE, 3), weights=None, classes=5),
    "large-0.75-no-top-avg": lambda: MobileNetV3Large(input_shape=(SIZE, SIZE, 3), weights=None, alpha=0.75,
                                                      include_top=False, pooling="avg"),  # fmt: skip
}


@pytest.mark.parametrize("kind", KERAS_MODELS)
def test_canonical_form_of_keras_applications_has_our_hard_activations(kind, rng):
    model = KERAS_MODELS[kind]()
    randomize_batchnorm(model)
    flat = canonical_form(model)
    x = images(rng, 4)
    assert relative_difference(outputs(flat, x), outputs(model, x)) < 1e-5
    kinds = [type(layer).__name__ for layer in flat.layers]
    assert not {"Functional", "Sequential", "TFOpLambda", "Lambda"} & set(kinds)
    assert all(type(layer).__module__.startswith(("keras", "tf_keras")) for layer in flat.layers
               if not isinstance(layer, (HardSwish, HardSigmoid)))  # fmt: skip
    if "minimalistic" not in kind and "flat-head" not in kind:
        assert "HardSwish" in kinds and "HardSigmoid" in kinds and "Activation" not in kinds[:-1]
    if kind not in OURS:  # those quantize in test_keras_applications_int8_equals_ours_op_for_op
        quantize_model(model)  # refused before: "layer 'activation' (Activation)"


@pytest.mark.parametrize("kind", OURS)
def test_keras_applications_int8_equals_ours_op_for_op(kind, rng):
    """The issue's bar: the same op counts, one partition, and int8 outputs within 1 output step on average."""
    from keras_mbv3.applications.weights import copy_from_keras_applications

    reference, ours = KERAS_MODELS[kind](), OURS[kind]()
    randomize_batchnorm(reference)
    copy_from_keras_applications(ours, reference)
    x = images(rng, 16)
    contents = [export_tflite(quantize_model(m, representative_dataset=x), quantization="int8",
                              input_type="float32", output_type="uint8") for m in (reference, ours)]  # fmt: skip
    theirs, mine = map(graph_report, contents)
    assert theirs["ops"] == mine["ops"] and theirs["partitions"] == mine["partitions"] == 1
    assert "HARD_SWISH" not in theirs["ops"]
    scale = interpreter(contents[0]).get_output_details()[0]["quantization"][0]
    found = [predict(interpreter(c), x) for c in contents]
    assert np.abs(found[0] - found[1]).mean() <= scale


OTHER_CNNS = {
    "MobileNetV2": lambda: apps.MobileNetV2(input_shape=(SIZE, SIZE, 3), weights=None, classes=4, alpha=0.5),
    "EfficientNetB0": lambda: apps.EfficientNetB0(input_shape=(SIZE, SIZE, 3), weights=None, classes=4),
    "ResNet50": lambda: apps.ResNet50(input_shape=(SIZE, SIZE, 3), weights=None, classes=4),
}


@pytest.mark.parametrize("name", OTHER_CNNS)
def test_other_keras_applications_cnns_quantize_to_one_int8_partition(name, rng):
    if not IS_KERAS_3 and name != "EfficientNetB0":
        pytest.skip("tf_keras: tfmot's own registry takes MobileNetV2 and ResNet50; EfficientNetB0 needs our rewrites")
    keras.utils.set_random_seed(0)  # the same random model whichever tests ran before (their int8 error depends on it)
    model = OTHER_CNNS[name]()
    x = images(rng, 8)
    content = export_tflite(quantize_model(model, representative_dataset=x), quantization="int8",
                            input_type="float32", output_type="uint8")  # fmt: skip
    report = graph_report(content)
    assert report["partitions"] == 1 and not report["float_ops"]
    if name == "EfficientNetB0":  # swish as LOGISTIC and MUL; Rescaling, Normalization, Rescaling as one op
        assert report["ops"]["LOGISTIC"] == report["ops"]["MUL"] == 65
        assert report["ops"]["DEPTHWISE_CONV_2D"] == 17  # 16 blocks + the folded preprocessing
    expected = outputs(model, x)
    assert np.abs(predict(interpreter(content), x) - expected).max() < 0.05


def test_swish_and_normalization_become_sigmoid_products_and_one_rescaling(rng):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    norm = keras.layers.Normalization(mean=[0.4, 0.5, 0.6], variance=[0.04, 0.09, 0.01])
    x = norm(x)
    x = keras.layers.Conv2D(6, 3, activation="swish")(x)
    x = keras.layers.Activation("swish")(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    flat = canonical_form(model)
    kinds = [type(layer).__name__ for layer in flat.layers]
    assert kinds.count("Rescaling") == 1 and "Normalization" not in kinds
    assert kinds.count("Multiply") == 2
    x = images(rng, 4, 8)
    assert relative_difference(outputs(flat, x), outputs(model, x)) < 1e-5


def test_a_layer_without_int8_rule_is_refused_by_name_and_class():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    model = keras.Model(inputs, keras.layers.LayerNormalization(name="my_norm")(x))
    with pytest.raises(UnsupportedLayerError, match=r"`model`.*'my_norm' \(LayerNormalization\).*allowed"):
        quantize_model(model)



def test_from_keras_model_gives_feature_maps(rng):
    from keras_mbv3.applications import feature_info, feature_model

    ours = from_keras(apps.MobileNetV3Small(input_shape=(64, 64, 3), weights=None, include_top=False))
    features = feature_model(ours)
    maps = features(images(rng, 1, 64))
    assert [tuple(maps[level].shape[1:3]) for level in ("P1", "P2", "P3", "P4", "P5")] == [
        (32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]  # fmt: skip
    assert [info.stride for info in feature_info(ours)] == [2, 4, 8, 16, 32]


def test_from_keras_model_with_a_head_is_one_netadapt_can_cut(rng):
    from keras_mbv3.adapt import latency, widths

    ours = from_keras(KERAS_MODELS["small-nested-head"]())
    reference = MobileNetV3Small(input_shape=(SIZE, SIZE, 3), weights=None, include_top=False, alpha=0.5)
    found = widths.widths(ours)
    assert set(widths.widths(reference)) <= set(found)
    assert latency.links(ours)  # the latency table's chain of units
    cut = widths.rebuild(ours, {"expanded_conv_4_expand": found["expanded_conv_4_expand"] - 8})
    assert cut.count_params() < ours.count_params() and cut(images(rng, 2)).shape == (2, 4)


def test_a_whole_models_keras_file_initializes_lraspp_and_ssdlite_backbones(tmp_path):
    """A classifier's .keras (here a from_keras model with a user head) gives its backbone layers' weights by name."""
    from keras_mbv3.applications import LRASPPMobileNetV3Small, SSDLiteMobileNetV3Small
    from keras_mbv3.layers.composite import weighted_leaf_layers

    source = from_keras(flat_head(apps.MobileNetV3Small(input_shape=(64, 64, 3), weights=None, include_top=False)))
    randomize_batchnorm(source)
    path = str(tmp_path / "mine.keras")
    source.save(path)
    theirs = weighted_leaf_layers(source)
    for model in (LRASPPMobileNetV3Small(3, input_shape=(64, 64, 3), backbone_weights=path),
                  SSDLiteMobileNetV3Small(3, input_shape=(64, 64, 3), backbone_weights=path, reduced_tail=False)):  # fmt: skip
        ours = weighted_leaf_layers(model)
        shared = [name for name in ours if name in theirs]
        assert len(shared) == len(weighted_leaf_layers(MobileNetV3Small(weights=None, include_top=False)))
        for name in shared:
            for mine, loaded in zip(ours[name].get_weights(), theirs[name].get_weights()):
                np.testing.assert_array_equal(mine, loaded)
    with pytest.raises(ValueError, match=r"mine.keras.*expanded_conv_8_project.*reduced_tail=False"):
        SSDLiteMobileNetV3Small(3, input_shape=(64, 64, 3), backbone_weights=path)
