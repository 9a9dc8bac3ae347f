"""Export to ``.tflite``: float32, float16, dynamic-range and full int8."""

import contextlib
import io
import logging
import os
import warnings

import tensorflow as tf

from keras_mbv3 import checks
from keras_mbv3.files import refuse_existing, write_atomically
from keras_mbv3.graph import input_name, is_functional
from keras_mbv3.layers.flatten import flatten_model
from keras_mbv3.quantization.calibration import representative_images
from keras_mbv3.quantization.int8_form import int8_form
from keras_mbv3.quantization.litert import graph_report
from keras_mbv3.quantization.metadata import ImageModelMetadata, append_files, with_metadata
from keras_mbv3.quantization.qat import is_qat_model, keep_xnnpack_limits

QUANTIZATIONS = ("int8", "float16", "float32", "dynamic")
IO_TYPES = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}


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
    if any(None in tuple(t.shape[1:]) for t in model.inputs):
        return tf.lite.TFLiteConverter.from_keras_model(model)
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    specs = [tf.TensorSpec((1,) + tuple(t.shape[1:]), t.dtype) for t in model.inputs]
    function = tf.function(lambda *x: model(list(x) if len(x) > 1 else x[0], training=False))
    frozen = convert_variables_to_constants_v2(function.get_concrete_function(*specs))
    return tf.lite.TFLiteConverter.from_concrete_functions([frozen])


SIGNATURE_KEY = "serving_default"


def _finish(content, input_names, strip_names, metadata=None):
    """Give ``.tflite`` bytes a ``serving_default`` signature if they have none; optionally strip inner names
    and add ``metadata`` (one pass over the flatbuffer).

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
    files = with_metadata(model, metadata) if metadata is not None else {}
    content = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    return append_files(content, files) if files else content


def _tensor_map(name, index):
    from tensorflow.lite.python import schema_py_generated as schema

    tensor_map = schema.TensorMapT()
    tensor_map.name, tensor_map.tensorIndex = name, index
    return tensor_map


def _convert(model, quantization, representative_dataset, input_type, output_type):
    """``.tflite`` bytes of ``model``, as the converter writes them; see ``export_tflite``."""
    qat = is_qat_model(model)
    if quantization == "int8" and qat:
        widened = keep_xnnpack_limits(model)
        if widened:
            warnings.warn(f"widened {widened} ranges of the QAT model to XNNPACK's int8 scale limits before export "
                          "(train with keras_mbv3.quantization.KeepXnnpackLimits to keep them there)", stacklevel=3)  # fmt: skip
    if quantization == "int8" and not qat:
        if representative_dataset is None:
            checks.fail(
                "representative_dataset", None,
                "calibration images (an array, a tf.data.Dataset or a generator) for int8 of a float model",
            )  # fmt: skip
        if is_functional(model):  # post-training int8 of the int8 form: one XNNPACK partition, not one per HARD_SWISH
            model = int8_form(flatten_model(model))
    with _without_notices_that_do_not_apply():
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
    with contextlib.redirect_stdout(io.StringIO()), _without_notices_that_do_not_apply():  # Keras 3's export
        return converter.convert()  # prints every captured variable


# Converter notices a user cannot act on. "trackable_obj": we freeze the variables
# ourselves and want the graph path it calls deprecated (10x faster than the
# SavedModel path). "Statistics for quantized inputs": int8 input of a QAT model
# takes its range from the model's input FakeQuant, of a float model from calibration.
NOTICES = ("Please consider providing the trackable_obj argument", "Statistics for quantized inputs were expected")


class _DropNotices(logging.Filter):
    def filter(self, record):
        return not record.getMessage().startswith(NOTICES)


@contextlib.contextmanager
def _without_notices_that_do_not_apply():
    drop, logger = _DropNotices(), logging.getLogger("absl")
    logger.addFilter(drop)
    try:
        with warnings.catch_warnings():
            for notice in NOTICES:
                warnings.filterwarnings("ignore", message=notice)
            yield
    finally:
        logger.removeFilter(drop)


def _boundary_conversions(report):
    """QUANTIZE ops that uint8 or float32 I/O of an int8 model needs: one per such input, one per uint8 output."""
    io_types = report["io_types"]
    return sum(t != "int8" for t in io_types["inputs"]) + sum(t == "uint8" for t in io_types["outputs"])


class Int8GraphError(RuntimeError):
    """An int8 export that is not fully int8, or not one XNNPACK partition."""


def check_int8_graph(content, on_split="raise"):
    """Check that int8 ``.tflite`` bytes are fully int8 and run as one XNNPACK partition.

    A tensor that no fake quantizer covered stays float in the converter, with
    no error (a DEQUANTIZE ... QUANTIZE island); an op that XNNPACK rejects in
    int8 (a scale ratio out of its limits, an op it lacks) runs in the slow
    builtin kernel and splits the graph. The QUANTIZE/DEQUANTIZE of uint8 or
    float I/O (outside XNNPACK, around the partition), and an undelegated last
    op that does not split the graph, are allowed; any other QUANTIZE is not.

    Raises:
        Int8GraphError: float ops or custom (Flex) ops inside; more than one
            partition when ``on_split`` is ``"raise"`` (``"warn"``: a warning).
    """
    try:
        report = graph_report(content)
    except (RuntimeError, ValueError) as error:  # an op LiteRT cannot run (a Flex op without its delegate)
        raise Int8GraphError(f"LiteRT cannot run the int8 export: {error}") from error
    custom = {op for op in report["ops"] if op.startswith("Flex") or op == "CUSTOM"}
    if report["float_ops"] or custom:
        raise Int8GraphError(
            f"the int8 export is not fully int8: float ops {report['float_ops']}, custom ops {sorted(custom)} "
            "(a tensor without a quantization range; quantize the model with keras_mbv3.quantization.quantize_model)"
        )
    boundary = _boundary_conversions(report)
    inner = report["ops"].get("QUANTIZE", 0) - boundary
    if inner > 0:
        raise Int8GraphError(f"the int8 export requantizes inside the graph: {inner} QUANTIZE ops beyond the "
                             f"{boundary} of its uint8/float I/O (ranges that disagree between connected tensors)")  # fmt: skip
    if report["partitions"] != 1:
        message = (
            f"the int8 export runs as {report['partitions']} XNNPACK partitions, not 1: ops left to the slow "
            f"builtin kernels {report['undelegated']} (keras_mbv3.quantization.quantize_model gives one partition; "
            "pass check_graph='warn' to export anyway)"
        )
        if on_split == "raise":
            raise Int8GraphError(message)
        warnings.warn(message, stacklevel=3)


def export_tflite(model, path=None, *, quantization="int8", representative_dataset=None, input_type="int8",
                  output_type="int8", strip_names=False, check_graph="raise", overwrite=False, metadata=None):  # fmt: skip
    """Convert ``model`` to a ``.tflite`` flatbuffer and optionally write it.

    Args:
        model: a Keras model (any number of inputs and outputs); a QAT model from
            ``quantize_model`` for QAT int8.
        path: where to write the file, or None to only return the bytes. Written to
            a temporary file and renamed, so it is whole or absent.
        quantization: ``"int8"`` (full integer; a float model needs
            ``representative_dataset``: post-training quantization of its int8
            form, see ``int8_form``), ``"float16"``,
            ``"float32"`` or ``"dynamic"`` (int8 weights, float activations).
        representative_dataset: calibration images for post-training int8 of a
            one-input model: an array ``(N, H, W, C)``, a ``tf.data.Dataset`` of
            images or batches, or a TFLite generator function (any model).
        input_type, output_type: ``"int8"``, ``"uint8"`` or ``"float32"``: the I/O of
            an int8 model (float models always take and give float32).
        strip_names: drop the names of inner tensors: a smaller file to ship,
            the same graph, outputs, input/output names and signature; tools
            such as Netron then show ops without their Keras layer names.
        check_graph: for int8, ``"raise"`` (``Int8GraphError``) or ``"warn"`` when
            the graph is not one XNNPACK partition (``check_int8_graph``); float
            islands always raise.
        overwrite: replace an existing ``path``.
        metadata: an ``ImageModelMetadata`` (task, class names, normalization)
            written as TFLite metadata with a labels file, as MediaPipe Tasks
            read it (they take uint8 or float32 input, not int8).

    Returns:
        The ``.tflite`` bytes, with a ``serving_default`` signature (inputs named
        after the Keras ``Input`` layers, outputs ``output_0``, ...).
    """
    checks.one_of("quantization", quantization, QUANTIZATIONS)
    checks.one_of("strip_names", strip_names, (False, True))
    checks.one_of("input_type", input_type, tuple(IO_TYPES))
    checks.one_of("output_type", output_type, tuple(IO_TYPES))
    checks.one_of("check_graph", check_graph, ("raise", "warn"))
    if metadata is not None and not isinstance(metadata, ImageModelMetadata):
        checks.fail("metadata", metadata, "None or a keras_mbv3.quantization.ImageModelMetadata", TypeError)
    if path is not None:
        refuse_existing(os.fspath(path), overwrite)  # before the (long) conversion
    content = _convert(model, quantization, representative_dataset, input_type, output_type)
    content = _finish(content, [input_name(t) for t in model.inputs], strip_names, metadata)
    if quantization == "int8":
        check_int8_graph(content, check_graph)
    if path is not None:
        write_atomically(content, path, overwrite)
    return content
