"""TFLite metadata (issue 12): written in the schema MediaPipe Tasks read, read back, and accepted by MediaPipe."""

import io
import zipfile

import numpy as np
import pytest

from keras_mbv3.backend import keras
from keras_mbv3.layers import HardSwish
from keras_mbv3.quantization import ImageModelMetadata, export_tflite, quantize_model, read_metadata
from keras_mbv3.quantization.metadata import LABELS_FILE, METADATA_NAME

from mediapipe_client import classify, needs_mediapipe, segment
LABELS = ("cat", "dog", "bird")


def classifier():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(x)
    x = HardSwish()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Softmax()(keras.layers.Dense(3)(x)))


def segmenter():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    return keras.Model(inputs, keras.layers.Conv2D(3, 1)(x))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3)).astype("float32")


@pytest.fixture(scope="module")
def exported(images, tmp_path_factory):
    """A float32 and a uint8-I/O QAT classifier with metadata, and a float32 segmenter, as files."""
    folder = tmp_path_factory.mktemp("metadata")
    model, metadata = classifier(), ImageModelMetadata("classification", LABELS, description="three pets")
    paths = {name: str(folder / f"{name}.tflite") for name in ("float", "uint8", "segmenter")}
    export_tflite(model, paths["float"], quantization="float32", metadata=metadata)
    export_tflite(quantize_model(model, representative_dataset=images), paths["uint8"], quantization="int8",
                  input_type="uint8", output_type="uint8", metadata=metadata)  # fmt: skip
    export_tflite(segmenter(), paths["segmenter"], quantization="float32",
                  metadata=ImageModelMetadata("segmentation", LABELS))  # fmt: skip
    return paths


def test_metadata_reads_back_with_its_labels_file(exported):
    for name in ("float", "uint8"):
        content = open(exported[name], "rb").read()
        metadata = read_metadata(content)
        assert metadata.task == "classification" and metadata.labels == LABELS and metadata.description == "three pets"
        assert metadata.name == "MobileNetV3" and (metadata.mean, metadata.std) == (0.0, 1.0)
        with zipfile.ZipFile(io.BytesIO(content)) as packed:
            assert packed.namelist() == [LABELS_FILE] and packed.read(LABELS_FILE) == b"cat\ndog\nbird\n"
    segmentation = read_metadata(open(exported["segmenter"], "rb").read())
    assert segmentation.task == "segmentation" and segmentation.labels == LABELS


def test_float_input_gets_normalization_and_uint8_input_none(exported):
    from keras_mbv3._vendor import tflite_metadata_schema as schema
    from tensorflow.lite.python import schema_py_generated as tflite

    for name, normalized in (("float", True), ("uint8", False)):
        model = tflite.Model.GetRootAs(open(exported[name], "rb").read(), 0)
        entries = [model.Metadata(i) for i in range(model.MetadataLength())]
        (entry,) = [m for m in entries if m.Name() == METADATA_NAME.encode()]
        data = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
        assert schema.ModelMetadata.ModelMetadataBufferHasIdentifier(data, 0)  # "M001"
        parsed = schema.ModelMetadataT.InitFromObj(schema.ModelMetadata.GetRootAs(data, 0))
        units = parsed.subgraphMetadata[0].inputTensorMetadata[0].processUnits
        assert bool(units) == normalized and parsed.minParserVersion == b"1.0.0"


def test_a_model_without_metadata_reads_none_and_a_second_write_replaces_the_first(images):
    assert read_metadata(export_tflite(classifier(), quantization="float32")) is None
    from tensorflow.lite.tools import flatbuffer_utils

    from keras_mbv3.quantization.metadata import append_files, with_metadata

    content = export_tflite(classifier(), quantization="float32", metadata=ImageModelMetadata("classification", LABELS))
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    files = with_metadata(model, ImageModelMetadata("classification", ("x", "y", "z")))
    rewritten = append_files(bytes(flatbuffer_utils.convert_object_to_bytearray(model)), files)
    assert read_metadata(rewritten).labels == ("x", "y", "z")
    names = [m.name.decode() if isinstance(m.name, bytes) else m.name for m in model.metadata]
    assert names.count(METADATA_NAME) == 1


@pytest.mark.parametrize("arguments, message", [
    (dict(task="detection", labels=LABELS), "task"),
    (dict(task="classification", labels=()), "labels"),
    (dict(task="classification", labels=("a", "b\nc")), "labels"),
    (dict(task="classification", labels=LABELS, std=0), "std"),
])  # fmt: skip
def test_bad_metadata_names_the_argument(arguments, message):
    with pytest.raises(ValueError, match=message):
        ImageModelMetadata(**arguments)


def test_metadata_of_another_type_or_for_two_outputs_is_refused():
    with pytest.raises(TypeError, match="metadata"):
        export_tflite(classifier(), quantization="float32", metadata={"labels": LABELS})
    inputs = keras.Input((8, 8, 3))
    two = keras.Model(inputs, [keras.layers.Conv2D(2, 1)(inputs), keras.layers.Conv2D(3, 1)(inputs)])
    with pytest.raises(ValueError, match="one image input and one output"):
        export_tflite(two, quantization="float32", metadata=ImageModelMetadata("classification", LABELS))


@needs_mediapipe
@pytest.mark.parametrize("name", ["float", "uint8"])
def test_mediapipe_image_classifier_gives_our_names_and_our_scores(exported, images, name):
    from keras_mbv3.quantization.litert import interpreter, predict

    ours = predict(interpreter(open(exported[name], "rb").read()), np.round(images))
    for categories, scores in zip(classify(exported[name], images), ours):
        assert {label for _, label, _ in categories} == set(LABELS)
        got = {index: score for index, _, score in categories}
        np.testing.assert_allclose([got[i] for i in range(3)], scores, atol=0.01)


@needs_mediapipe
def test_mediapipe_image_segmenter_gives_our_argmax_and_labels(exported, images):
    from keras_mbv3.quantization.litert import interpreter, predict

    ours = predict(interpreter(open(exported["segmenter"], "rb").read()), np.round(images)).argmax(-1)
    labels, masks = segment(exported["segmenter"], images)
    assert labels == LABELS and np.mean(masks == ours) >= 0.99
