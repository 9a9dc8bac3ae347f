"""TFLite metadata for image models: what MediaPipe Tasks (and Android/iOS codegen) read from a ``.tflite``.

MediaPipe's ``ImageClassifier`` and ``ImageSegmenter`` find the metadata
flatbuffer (schema 1.5.0, identifier ``M001``) in the model's buffer named
``TFLITE_METADATA``, and the files it names (labels) in a zip archive appended
to the model. What they require, read in their sources and checked by running
them: input uint8 (raw pixels) or float32 with ``NormalizationOptions`` (they
feed ``(pixel - mean) / std`` for pixels in [0, 255], one mean and std for all
channels); int8 input or classifier output is refused; labels are a
``TENSOR_AXIS_LABELS`` file, one name per line; the segmenter takes its
activation from the ``SEGMENTER_METADATA`` custom metadata. ``ObjectDetector``
finds the four outputs of ``TFLite_Detection_PostProcess`` by their metadata
names (``DETECTION_OUTPUTS``, one per output in the subgraph's order), reads the
box coordinates' order from ``BoundingBoxProperties`` and the class names from a
``TENSOR_VALUE_LABELS`` file on ``category``.
"""

import dataclasses
import io
import zipfile

import flatbuffers
import numpy as np
from flatbuffers import flexbuffers

from keras_mbv3 import __version__, checks
from keras_mbv3._vendor import segmenter_metadata_schema as segmenter_schema
from keras_mbv3._vendor import tflite_metadata_schema as schema
from keras_mbv3.quantization.postprocess import CUSTOM_OP

METADATA_NAME = "TFLITE_METADATA"
LABELS_FILE = "labels.txt"
SEGMENTER_METADATA = "SEGMENTER_METADATA"
TASKS = ("classification", "segmentation", "detection")
# The post-process's outputs (its port order) as MediaPipe's ObjectDetector finds them
DETECTION_OUTPUTS = ("location", "category", "score", "number of detections")
TASK_OUTPUTS = {"probability": "classification", "segmentation_masks": "segmentation",
                DETECTION_OUTPUTS[0]: "detection"}  # the first output's name tells the task


@dataclasses.dataclass(frozen=True)
class ImageModelMetadata:
    """What a ``.tflite`` image model says about itself.

    Args:
        task: ``"classification"`` (output: class scores), ``"segmentation"``
            (output: per-pixel class logits, at the input size) or ``"detection"``
            (an export with ``postprocess=DetectionPostProcess(...)``: outputs
            boxes, classes, scores and count).
        labels: the class names, index order (``labels[i]`` is class ``i``).
            For detection, the names of the detected classes in the order of
            the post-process's class ids: 0-based, the background left out
            (``labels[0]`` is the model's class 1).
        mean, std: a float32 input takes ``(pixel - mean) / std`` for RGB
            pixels in [0, 255]. Our models rescale inside: mean 0, std 1.
        name, description, version, author, license: shown by model viewers.
    """

    task: str
    labels: tuple
    mean: float = 0.0
    std: float = 1.0
    name: str = "MobileNetV3"
    description: str = ""
    version: str = __version__
    author: str = "keras-mbv3"
    license: str = ""

    def __post_init__(self):
        checks.one_of("task", self.task, TASKS)
        labels = tuple(self.labels)
        if not labels or not all(isinstance(label, str) and label and "\n" not in label for label in labels):
            checks.fail("labels", self.labels, "one non-empty name without line breaks per class")
        object.__setattr__(self, "labels", labels)
        if not float(self.std) > 0:
            checks.fail("std", self.std, "a positive number")


def _tensor(name, description, content_type, content, files=(), units=()):
    tensor = schema.TensorMetadataT()
    tensor.name, tensor.description = name, description
    tensor.content = schema.ContentT()
    tensor.content.contentPropertiesType, tensor.content.contentProperties = content_type, content
    tensor.associatedFiles = list(files) or None
    tensor.processUnits = list(units) or None
    return tensor


def _image(color_space):
    image = schema.ImagePropertiesT()
    image.colorSpace = color_space
    return image


def _feature(name, description, files=()):
    return _tensor(name, description, schema.ContentProperties.FeatureProperties, schema.FeaturePropertiesT(), files)


def _range(low, high):
    axes = schema.ValueRangeT()
    axes.min, axes.max = low, high
    return axes


def _labels_file(metadata, kind=schema.AssociatedFileType.TENSOR_AXIS_LABELS):
    labels = schema.AssociatedFileT()
    labels.name, labels.type = LABELS_FILE, kind
    labels.description = f"the {len(metadata.labels)} class names, one per line, in index order"
    return labels


def _normalization(metadata):
    unit = schema.ProcessUnitT()
    unit.optionsType = schema.ProcessUnitOptions.NormalizationOptions
    unit.options = schema.NormalizationOptionsT()
    unit.options.mean, unit.options.std = [float(metadata.mean)], [float(metadata.std)]
    return unit


def _segmenter_options():
    options = segmenter_schema.ImageSegmenterOptionsT()
    options.activation = segmenter_schema.Activation.SOFTMAX  # our outputs are logits
    builder = flatbuffers.Builder(0)
    builder.Finish(options.Pack(builder), b"V001")
    custom = schema.CustomMetadataT()
    custom.name, custom.data = SEGMENTER_METADATA, list(builder.Output())
    return custom


def _detection_outputs(metadata):
    """The post-process's output metadata and tensor group, as MediaPipe's own metadata writer makes them."""
    box = schema.BoundingBoxPropertiesT()
    box.index = [1, 0, 3, 2]  # where (left, top, right, bottom) are in (ymin, xmin, ymax, xmax)
    box.type, box.coordinateType = schema.BoundingBoxType.BOUNDARIES, schema.CoordinateType.RATIO
    location, category, score, count = DETECTION_OUTPUTS
    outputs = [
        _tensor(location, "boxes (ymin, xmin, ymax, xmax), normalized", schema.ContentProperties.BoundingBoxProperties,
                box),
        _feature(category, "class of each box: 0-based, the background left out",
                 [_labels_file(metadata, schema.AssociatedFileType.TENSOR_VALUE_LABELS)]),
        _feature(score, "score of each box"),
        _feature(count, "number of detections"),
    ]  # fmt: skip
    for output in outputs[:3]:
        output.content.range = _range(2, 2)  # the boxes' coordinate axis, set on all three as MediaPipe's writer does
    group = schema.TensorGroupT()
    group.name, group.tensorNames = "detection_result", [location, category, score]
    return outputs, [group]


def metadata_flatbuffer(metadata, float_input):
    """The metadata flatbuffer (bytes) of one image input and the task's outputs."""
    units = [_normalization(metadata)] if float_input else []
    image = _tensor("image", "RGB image, pixels in [0, 255]" + (" before normalization" if float_input else ""),
                    schema.ContentProperties.ImageProperties, _image(schema.ColorSpaceType.RGB), units=units)  # fmt: skip
    subgraph = schema.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [image]
    if metadata.task == "classification":
        subgraph.outputTensorMetadata = [_feature("probability", "class probabilities", [_labels_file(metadata)])]
        version = "1.0.0"
    elif metadata.task == "segmentation":
        mask = _image(schema.ColorSpaceType.GRAYSCALE)
        output = _tensor("segmentation_masks", "per-pixel class logits at the input size",
                         schema.ContentProperties.ImageProperties, mask, files=[_labels_file(metadata)])  # fmt: skip
        output.content.range = _range(1, 2)  # the mask's (height, width) axes
        subgraph.outputTensorMetadata, subgraph.customMetadata = [output], [_segmenter_options()]
        version = "1.5.0"  # custom metadata needs parser 1.5.0
    else:
        subgraph.outputTensorMetadata, subgraph.outputTensorGroups = _detection_outputs(metadata)
        version = "1.2.0"  # output tensor groups need parser 1.2.0
    model = schema.ModelMetadataT()
    model.name, model.description, model.version = metadata.name, metadata.description, metadata.version
    model.author, model.license = metadata.author, metadata.license
    model.subgraphMetadata, model.minParserVersion = [subgraph], version
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), b"M001")
    return bytes(builder.Output())


def with_metadata(model, metadata):
    """Put ``metadata`` into a TFLite ``ModelT`` (the object form of ``flatbuffer_utils``), replacing any.

    Returns the associated files to append as a zip: ``{name: bytes}``.
    """
    from tensorflow.lite.python import schema_py_generated as tflite

    (subgraph,) = model.subgraphs
    if metadata.task == "detection":
        _check_detection(model, metadata)
    elif len(subgraph.inputs) != 1 or len(subgraph.outputs) != 1:
        checks.fail("metadata", metadata, "a model of one image input and one output")
    input_type = subgraph.tensors[subgraph.inputs[0]].type
    content = metadata_flatbuffer(metadata, float_input=input_type == tflite.TensorType.FLOAT32)
    buffer = tflite.BufferT()
    buffer.data = np.frombuffer(content, np.uint8)
    model.buffers.append(buffer)
    entry = tflite.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if _name(m.name) != METADATA_NAME] + [entry]
    return {LABELS_FILE: ("\n".join(metadata.labels) + "\n").encode()}


def _check_detection(model, metadata):
    """A detection export: one input, the post-process's outputs as the model's in its port order (float32 boxes
    (1, D, 4), classes (1, D), scores (1, D) and count (1,), shaped by the op when allocated), a label per class."""
    (subgraph,) = model.subgraphs
    ops = [op for op in subgraph.operators if _name(model.operatorCodes[op.opcodeIndex].customCode) == CUSTOM_OP]
    if len(subgraph.inputs) != 1 or len(ops) != 1 or list(subgraph.outputs) != list(ops[0].outputs):
        found = f"this model has {len(subgraph.outputs)} output(s) and {len(ops)} {CUSTOM_OP}"
        checks.fail("metadata", metadata, f"for task 'detection', a detection export with {CUSTOM_OP} (export_tflite"
                    "(..., postprocess=...)), outputs boxes (1, D, 4), classes (1, D), scores (1, D) and count (1,); "
                    + found)  # fmt: skip
    classes = flexbuffers.Loads(bytes(ops[0].customOptions))["num_classes"]
    if len(metadata.labels) != classes:
        checks.fail("metadata", metadata, f"{classes} labels, one per class of the post-process (the background "
                    f"left out), not {len(metadata.labels)}")  # fmt: skip


def append_files(content, files):
    """``.tflite`` bytes with ``files`` (``{name: bytes}``) appended as a zip archive, as the metadata expects."""
    archive = io.BytesIO(content)
    archive.seek(0, io.SEEK_END)
    with zipfile.ZipFile(archive, "a") as packed:
        for name, data in files.items():
            packed.writestr(name, data)
    return archive.getvalue()


def _name(value):
    return value.decode() if isinstance(value, bytes) else value


def read_metadata(content):
    """The ``ImageModelMetadata`` of ``.tflite`` bytes written by ``export_tflite(..., metadata=...)``, else None."""
    from tensorflow.lite.python import schema_py_generated as tflite

    model = tflite.Model.GetRootAs(content, 0)
    entries = [model.Metadata(i) for i in range(model.MetadataLength())]
    found = [m for m in entries if _name(m.Name()) == METADATA_NAME]
    if not found:
        return None
    data = model.Buffers(found[0].Buffer()).DataAsNumpy().tobytes()
    parsed = schema.ModelMetadataT.InitFromObj(schema.ModelMetadata.GetRootAs(data, 0))
    (subgraph,) = parsed.subgraphMetadata
    output = subgraph.outputTensorMetadata[0]
    with zipfile.ZipFile(io.BytesIO(content)) as packed:
        labels = packed.read(LABELS_FILE).decode().splitlines()
    units = subgraph.inputTensorMetadata[0].processUnits or []
    mean, std = (units[0].options.mean[0], units[0].options.std[0]) if units else (0.0, 1.0)
    return ImageModelMetadata(
        task=TASK_OUTPUTS.get(_name(output.name), "classification"),
        labels=tuple(labels), mean=float(mean), std=float(std), name=_name(parsed.name) or "",
        description=_name(parsed.description) or "", version=_name(parsed.version) or "",
        author=_name(parsed.author) or "", license=_name(parsed.license) or "",
    )  # fmt: skip
