"""TFLite metadata (issue 12): written in the schema MediaPipe Tasks read, read back, and accepted by MediaPipe."""

import io
import zipfile

import numpy as np
import pytest

from keras_mbv3.backend import keras
from keras_mbv3.layers import HardSwish
from keras_mbv3.quantization import (DetectionPostProcess, ImageModelMetadata, export_tflite, quantize_model,
                                     read_metadata)
from keras_mbv3.quantization.metadata import DETECTION_OUTPUTS, LABELS_FILE, METADATA_NAME

from mediapipe_client import classify, detect, needs_mediapipe, segment
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


def parsed_metadata(path):
    """The ``ModelMetadataT`` in the ``TFLITE_METADATA`` buffer of a ``.tflite`` file."""
    from keras_mbv3._vendor import tflite_metadata_schema as schema
    from tensorflow.lite.python import schema_py_generated as tflite

    model = tflite.Model.GetRootAs(open(path, "rb").read(), 0)
    entries = [model.Metadata(i) for i in range(model.MetadataLength())]
    (entry,) = [m for m in entries if m.Name() == METADATA_NAME.encode()]
    data = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    assert schema.ModelMetadata.ModelMetadataBufferHasIdentifier(data, 0)  # "M001"
    return schema.ModelMetadataT.InitFromObj(schema.ModelMetadata.GetRootAs(data, 0))


def test_float_input_gets_normalization_and_uint8_input_none(exported):
    for name, normalized in (("float", True), ("uint8", False)):
        parsed = parsed_metadata(exported[name])
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
    (dict(task="keypoints", labels=LABELS), "task"),
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


# Detection: a 4-class SSDLite (LABELS + the background) ending in TFLite_Detection_PostProcess


@pytest.fixture(scope="module")
def detectors(ssdlite_detector, tmp_path_factory):
    """Float, QAT int8 (float32 input) and QAT int8 (uint8 input) SSDLite exports with metadata, and images."""
    from keras_mbv3.applications.ssdlite import anchors

    model, qat, images = ssdlite_detector
    # 0.35: from the random weights' softmax over 4 classes, 10 to 20 detections per image, at most 20 for some
    options = dict(postprocess=DetectionPostProcess(anchors(model), score_threshold=0.35, max_detections=20),
                   metadata=ImageModelMetadata("detection", LABELS, name="SSDLite",
                                               description="three pets"))  # fmt: skip
    folder = tmp_path_factory.mktemp("detection_metadata")
    paths = {name: str(folder / f"{name}.tflite") for name in ("float", "int8", "uint8")}
    export_tflite(model, paths["float"], quantization="float32", **options)
    export_tflite(qat, paths["int8"], quantization="int8", input_type="float32", **options)
    export_tflite(qat, paths["uint8"], quantization="int8", input_type="uint8", **options)
    return paths, images


@pytest.mark.slow
def test_detection_metadata_reads_back(detectors):
    paths, _ = detectors
    for name, normalized in (("float", True), ("int8", True), ("uint8", False)):
        metadata = read_metadata(open(paths[name], "rb").read())
        assert metadata.task == "detection" and metadata.labels == LABELS
        assert (metadata.name, metadata.description, metadata.mean, metadata.std) == ("SSDLite", "three pets", 0, 1)
        units = parsed_metadata(paths[name]).subgraphMetadata[0].inputTensorMetadata[0].processUnits
        assert bool(units) == normalized
        if units:
            assert (list(units[0].options.mean), list(units[0].options.std)) == ([0.0], [1.0])


def test_detection_metadata_has_what_mediapipes_object_detector_reads(detectors):
    from keras_mbv3._vendor import tflite_metadata_schema as schema
    from keras_mbv3.quantization.litert import interpreter

    paths, _ = detectors
    for path in paths.values():
        outputs = interpreter(open(path, "rb").read()).get_output_details()  # the op shapes them when allocated
        assert [tuple(d["shape"]) for d in outputs] == [(1, 20, 4), (1, 20), (1, 20), (1,)]  # boxes, classes, ...
        parsed = parsed_metadata(path)
        assert parsed.minParserVersion == b"1.2.0"
        (graph,) = parsed.subgraphMetadata
        (image,) = graph.inputTensorMetadata
        assert image.content.contentProperties.colorSpace == schema.ColorSpaceType.RGB
        outputs = graph.outputTensorMetadata
        assert [t.name.decode() for t in outputs] == list(DETECTION_OUTPUTS)
        box = outputs[0].content.contentProperties
        assert outputs[0].content.contentPropertiesType == schema.ContentProperties.BoundingBoxProperties
        assert list(box.index) == [1, 0, 3, 2] and box.type == schema.BoundingBoxType.BOUNDARIES
        assert box.coordinateType == schema.CoordinateType.RATIO
        (labels,) = outputs[1].associatedFiles
        assert (labels.name.decode(), labels.type) == (LABELS_FILE, schema.AssociatedFileType.TENSOR_VALUE_LABELS)
        assert all(t.associatedFiles is None for t in outputs[::2] + outputs[3:])
        assert [(t.content.range.min, t.content.range.max) for t in outputs[:3]] == [(2, 2)] * 3
        (group,) = graph.outputTensorGroups
        assert group.name == b"detection_result"
        assert [n.decode() for n in group.tensorNames] == list(DETECTION_OUTPUTS[:3])
        with zipfile.ZipFile(path) as packed:
            assert packed.namelist() == [LABELS_FILE] and packed.read(LABELS_FILE) == b"cat\ndog\nbird\n"


def test_detection_metadata_needs_a_detection_export_with_one_label_per_class(detectors):
    from tensorflow.lite.tools import flatbuffer_utils

    from keras_mbv3.quantization.metadata import with_metadata

    with pytest.raises(ValueError, match=r"metadata.*postprocess=.*this model has 1 output\(s\) and 0 "):
        export_tflite(classifier(), quantization="float32", metadata=ImageModelMetadata("detection", LABELS))
    paths, _ = detectors

    def model():
        return flatbuffer_utils.read_model_from_bytearray(bytearray(open(paths["float"], "rb").read()))

    with pytest.raises(ValueError, match="metadata.*3 labels.*background left out.*not 4"):
        with_metadata(model(), ImageModelMetadata("detection", ("background",) + LABELS))
    with pytest.raises(ValueError, match="metadata.*one image input and one output"):
        with_metadata(model(), ImageModelMetadata("classification", LABELS))


def litert_detections(path, images):
    """Our LiteRT run of ``path`` as ``detect`` gives MediaPipe's: ``[[(name, score, (x, y, w, h)), ...] per image]``,
    pixel boxes rounded as MediaPipe does (origin truncated and clamped at 0, size truncated)."""
    from keras_mbv3.quantization.litert import interpreter

    runner = interpreter(open(path, "rb").read()).get_signature_runner()
    ((name, detail),) = runner.get_input_details().items()
    found = []
    for pixels in images:  # uint8 input: the raw pixels, as MediaPipe feeds them
        out = runner(**{name: pixels[None].astype(detail["dtype"])})
        height, width = (np.float32(size) for size in pixels.shape[:2])
        count = int(out["num_detections"][0])
        boxes, classes, scores = (out[key][0, :count] for key in ("detection_boxes", "detection_classes",
                                                                  "detection_scores"))  # fmt: skip
        found.append([(LABELS[int(c)], float(score), (max(0, int(xmin * width)), max(0, int(ymin * height)),
                                                      int((xmax - xmin) * width), int((ymax - ymin) * height)))
                      for (ymin, xmin, ymax, xmax), c, score in zip(boxes, classes, scores)])  # fmt: skip
    return found


@pytest.mark.slow
@needs_mediapipe
@pytest.mark.parametrize("name", ["float", "int8", "uint8"])
def test_mediapipe_object_detector_gives_our_detections_with_our_names(detectors, name):
    """Same count, names, scores and pixel boxes; compared in (name, box) order, as MediaPipe lists a box kept for
    several classes once, at its best score."""
    paths, images = detectors
    ours, theirs = litert_detections(paths[name], images), detect(paths[name], images)
    assert sum(map(len, ours)) >= len(images)  # something to compare
    for expected, found in zip(ours, theirs):
        expected, found = (sorted(entries, key=lambda entry: (entry[0], entry[2])) for entries in (expected, found))
        assert [(label, box) for label, _, box in found] == [(label, box) for label, _, box in expected]
        np.testing.assert_allclose([score for _, score, _ in found], [score for _, score, _ in expected], atol=1e-6)
