"""Export to ``.tflite``: float32, float16, dynamic-range and full int8."""

import contextlib
import io
import os

import numpy as np
import tensorflow as tf

from keras_mbv3 import checks
from keras_mbv3.files import refuse_existing, write_atomically
from keras_mbv3.graph import input_name
from keras_mbv3.quantization.calibration import representative_images

QUANTIZATIONS = ("int8", "float16", "float32", "dynamic")
IO_TYPES = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}


def is_qat_model(model):
    """Whether ``model`` was made by tfmot quantization-aware training (has quantize wrappers)."""
    return any(type(layer).__name__ in ("QuantizeWrapper", "QuantizeWrapperV2", "QuantizeLayer") for layer in model.layers)


def _representative(dataset):
    """A TFLite representative-dataset generator from a callable or what ``representative_images`` takes."""
    if callable(dataset):
        return dataset
    images = representative_images(dataset)

    def generator():
        for image in images:
            yield [image[None]]

    return generator


def _converter(model):
    """A TFLite converter for ``model`` with batch size 1.

    A model with a static input size is traced once and its variables frozen:
    static shapes throughout, and 10x faster than ``from_keras_model`` (which
    saves a SavedModel, tracing every layer: ~90 s for a QAT MobileNetV3Small).
    """
    if len(model.inputs) != 1 or None in tuple(model.inputs[0].shape[1:]):
        return tf.lite.TFLiteConverter.from_keras_model(model)
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec((1,) + tuple(model.inputs[0].shape[1:]), model.inputs[0].dtype)
    function = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    return tf.lite.TFLiteConverter.from_concrete_functions([convert_variables_to_constants_v2(function)])


SIGNATURE_KEY = "serving_default"


def _finish(content, input_names, strip_names):
    """Give ``.tflite`` bytes a ``serving_default`` signature if they have none; optionally strip inner names.

    The signature is what ``TFLiteConverter.from_keras_model`` writes (inputs
    named after the Keras ``Input`` layers, outputs ``output_0``, ...), so that
    ``Interpreter.get_signature_runner()`` works on our faster traced export too.
    ``strip_names`` drops the names of inner tensors: the converter names each
    after every op fused into it (``model/block/Conv2D;model/block/BiasAdd;...``),
    33 KB of a 32x32 MobileNetV3Small int8 file. Inputs, outputs and signatures
    keep theirs (``flatbuffer_utils.strip_strings`` drops those too).
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    (subgraph,) = model.subgraphs
    if not model.signatureDefs:
        signature = schema.SignatureDefT()
        signature.signatureKey, signature.subgraphIndex = SIGNATURE_KEY, 0
        signature.inputs = [_tensor_map(name, index) for name, index in zip(input_names, subgraph.inputs)]
        signature.outputs = [_tensor_map(f"output_{i}", index) for i, index in enumerate(subgraph.outputs)]
        model.signatureDefs = [signature]
    if strip_names:
        named = set(subgraph.inputs) | set(subgraph.outputs)
        for index, tensor in enumerate(subgraph.tensors):
            if index not in named:
                tensor.name = None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _tensor_map(name, index):
    from tensorflow.lite.python import schema_py_generated as schema

    tensor_map = schema.TensorMapT()
    tensor_map.name, tensor_map.tensorIndex = name, index
    return tensor_map


def convert(model, quantization="int8", representative_dataset=None, input_type="int8", output_type="int8",
            strip_names=False):  # fmt: skip
    """Convert ``model`` to ``.tflite`` bytes; see ``export_tflite``."""
    checks.one_of("quantization", quantization, QUANTIZATIONS)
    checks.one_of("strip_names", strip_names, (False, True))
    checks.one_of("input_type", input_type, tuple(IO_TYPES))
    checks.one_of("output_type", output_type, tuple(IO_TYPES))
    qat = is_qat_model(model)
    if quantization == "int8" and not qat and representative_dataset is None:
        checks.fail(
            "representative_dataset", None,
            "calibration images (an array, a tf.data.Dataset or a generator) for int8 of a float model",
        )  # fmt: skip
    converter = _converter(model)
    if quantization != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        if not qat:  # a QAT graph carries its ranges; the converter rejects this flag without calibration
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = IO_TYPES[input_type]
        converter.inference_output_type = IO_TYPES[output_type]
        if representative_dataset is not None:
            converter.representative_dataset = _representative(representative_dataset)
    with contextlib.redirect_stdout(io.StringIO()):  # Keras 3's export prints every captured variable
        content = converter.convert()
    return _finish(content, [input_name(t) for t in model.inputs], strip_names)


def export_tflite(model, path=None, *, quantization="int8", representative_dataset=None, input_type="int8",
                  output_type="int8", strip_names=False, overwrite=False):  # fmt: skip
    """Convert ``model`` to a ``.tflite`` flatbuffer and optionally write it.

    Args:
        model: a Keras model; a QAT model from ``quantize_model`` for QAT int8.
        path: where to write the file, or None to only return the bytes. Written to
            a temporary file and renamed, so it is whole or absent.
        quantization: ``"int8"`` (full integer; a float model needs
            ``representative_dataset``: post-training quantization), ``"float16"``,
            ``"float32"`` or ``"dynamic"`` (int8 weights, float activations).
        representative_dataset: calibration images for post-training int8: an
            array ``(N, H, W, C)``, a ``tf.data.Dataset`` of images or batches, or a
            TFLite generator function.
        input_type, output_type: ``"int8"``, ``"uint8"`` or ``"float32"``: the I/O of
            an int8 model (float models always take and give float32).
        strip_names: drop the names of inner tensors: a smaller file to ship,
            the same graph, outputs, input/output names and signature; tools
            such as Netron then show ops without their Keras layer names.
        overwrite: replace an existing ``path``.

    Returns:
        The ``.tflite`` bytes, with a ``serving_default`` signature (inputs named
        after the Keras ``Input`` layers, outputs ``output_0``, ...).
    """
    if path is not None:
        refuse_existing(os.fspath(path), overwrite)  # before the (long) conversion
    content = convert(model, quantization, representative_dataset, input_type, output_type, strip_names)
    if path is not None:
        write_atomically(content, path, overwrite)
    return content
