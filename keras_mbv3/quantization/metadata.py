"""TFLite metadata for image models: what MediaPipe Tasks (and Android/iOS codegen) read from a ``.tflite``.

MediaPipe's ``ImageClassifier`` and ``ImageSegmenter`` find the metadata
flatbuffer (schema 1.5.0, identifier ``M001``) in the model's buffer named
``TFLITE_METADATA``, and the files it names (labels) in a zip archive appended
to the model. What they require, read in their sources and checked by running
them: input uint8 (raw pixels) or float32 with ``NormalizationOptions`` (they
feed ``(pixel - mean) / std`` for pixels in [0, 255], one mean and std for all
channels); int8 input or classifier output is refused; labels are a
``TENSOR_AXIS_LABELS`` file, one name per line; the segmenter takes its
activation from the ``SEGMENTER_METADATA`` custom metadata.
"""

import dataclasses
import io
import zipfile

import flatbuffers
import numpy as np

from keras_mbv3 import __version__, checks
from keras_mbv3._vendor import segmenter_metadata_schema as segmenter_schema
from keras_mbv3._vendor import tflite_metadata_schema as schema

METADATA_NAME = "TFLITE_METADATA"
LABELS_FILE = "labels.txt"
SEGMENTER_METADATA = "SEGMENTER_METADATA"
TASKS = ("classification", "segmentation")


@dataclasses.dataclass(frozen=True)
class ImageModelMetadata:
    """What a ``.tflite`` image model says about itself.

    Args:
        task: ``"classification"`` (output: class scores) or ``"segmentation"``
            (output: per-pixel class logits, at the input size).
        labels: the class names, index order (``labels[i]`` is class ``i``).
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


def _labels_file(metadata):
    labels = schema.AssociatedFileT()
    labels.name, labels.type = LABELS_FILE, schema.AssociatedFileType.TENSOR_AXIS_LABELS
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


def metadata_flatbuffer(metadata, float_input):
    """The metadata flatbuffer (bytes) of one image input and one output."""
    units = [_normalization(metadata)] if float_input else []
    image = _tensor("image", "RGB image, pixels in [0, 255]" + (" before normalization" if float_input else ""),
                    schema.ContentProperties.ImageProperties, _image(schema.ColorSpaceType.RGB), units=units)  # fmt: skip
    subgraph = schema.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [image]
    if metadata.task == "classification":
        output = _tensor("probability", "class probabilities", schema.ContentProperties.FeatureProperties,
                         schema.FeaturePropertiesT(), files=[_labels_file(metadata)])  # fmt: skip
        version = "1.0.0"
    else:
        mask = _image(schema.ColorSpaceType.GRAYSCALE)
        output = _tensor("segmentation_masks", "per-pixel class logits at the input size",
                         schema.ContentProperties.ImageProperties, mask, files=[_labels_file(metadata)])  # fmt: skip
        output.content.range = schema.ValueRangeT()
        output.content.range.min, output.content.range.max = 1, 2  # the mask's (height, width) axes
        subgraph.customMetadata = [_segmenter_options()]
        version = "1.5.0"  # custom metadata needs parser 1.5.0
    subgraph.outputTensorMetadata = [output]
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
    if len(subgraph.inputs) != 1 or len(subgraph.outputs) != 1:
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
        task="segmentation" if _name(output.name) == "segmentation_masks" else "classification",
        labels=tuple(labels), mean=float(mean), std=float(std), name=_name(parsed.name) or "",
        description=_name(parsed.description) or "", version=_name(parsed.version) or "",
        author=_name(parsed.author) or "", license=_name(parsed.license) or "",
    )  # fmt: skip
