"""The TFLite converter on a Keras model: the conversion ``export_tflite`` makes, before the flatbuffer pass."""

import contextlib
import io
import logging
import warnings

import numpy as np
import tensorflow as tf

from keras_mbv3 import checks
from keras_mbv3.quantization.calibration import REPRESENTATIVE_SAMPLES, representative_images
from keras_mbv3.quantization.canonical import canonical_form, has_graph
from keras_mbv3.quantization.int8_form import int8_form
from keras_mbv3.quantization.qat import is_qat_model, keep_xnnpack_limits, quantize_model

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


def post_training_model(model, representative_dataset):
    """The QAT model of the float ``model`` with every range calibrated on the images, not trained.

    Post-training int8 through the same int8 form, calibration and XNNPACK
    limits as QAT: one partition whatever the data. Measured before: the
    converter's own calibration of an untrained MobileNetV3Small at 96 px gave
    18 partitions (ADDs and MULs outside XNNPACK's scale limits). None, with a
    warning naming it, when a layer has no int8 rule in the engine.
    """
    if callable(representative_dataset):  # a TFLite generator of [image batch] lists
        representative_dataset = np.concatenate([np.asarray(sample[0]) for sample in representative_dataset()])
    images = representative_images(representative_dataset, REPRESENTATIVE_SAMPLES)
    try:
        return quantize_model(model, images)
    except checks.UnsupportedLayerError as error:
        warnings.warn(f"post-training int8 by the converter's own calibration, which may split the graph: {error}",
                      stacklevel=4)  # fmt: skip
        return None


def _converter(model, postprocess=None):
    """A TFLite converter for ``model`` with batch size 1.

    A model with a static input size is traced once: static shapes throughout,
    and 10x faster than ``from_keras_model`` (which saves a SavedModel, tracing
    every layer: ~90 s for a QAT MobileNetV3Small). Without a trackable object
    the converter freezes the traced function itself, once (freezing it before
    made the converter freeze it again: QAT Large at 32 px, 4.6 s -> 3.7 s an
    export, the same bytes).
    """
    if postprocess is None and any(None in tuple(t.shape[1:]) for t in model.inputs):
        return tf.lite.TFLiteConverter.from_keras_model(model)
    specs = [tf.TensorSpec((1,) + tuple(t.shape[1:]), t.dtype) for t in model.inputs]
    function = tf.function(lambda *x: model(list(x) if len(x) > 1 else x[0], training=False))
    traced = function.get_concrete_function(*specs)
    if postprocess is None:
        return tf.lite.TFLiteConverter.from_concrete_functions([traced])
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(traced)
    # Only the Keras part is frozen, and a trackable object keeps the converter from freezing the rest: either
    # would inline the experimental_implements function that becomes the post-process op (no op, no error).
    converter = tf.lite.TFLiteConverter.from_concrete_functions([postprocess.wrap(frozen, specs)], tf.Module())
    converter.allow_custom_ops = True
    return converter


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


def check_calibration(model, quantization, representative_dataset):
    """int8 of a float model needs calibration images (a QAT model carries its ranges)."""
    if quantization == "int8" and representative_dataset is None and not is_qat_model(model):
        checks.fail(
            "representative_dataset", None,
            "calibration images (an array, a tf.data.Dataset or a generator) for int8 of a float model",
        )  # fmt: skip


def convert(model, quantization, representative_dataset, input_type, output_type, postprocess=None):
    """``.tflite`` bytes of ``model``, as the converter writes them; see ``export_tflite``."""
    qat = is_qat_model(model)
    if quantization == "int8" and qat:
        widened = keep_xnnpack_limits(model)
        if widened:
            warnings.warn(f"widened {widened} ranges of the QAT model to XNNPACK's int8 scale limits before export "
                          "(train with keras_mbv3.quantization.KeepXnnpackLimits to keep them there)", stacklevel=3)  # fmt: skip
    if quantization == "int8" and not qat:
        check_calibration(model, quantization, representative_dataset)
        calibrated = None
        if has_graph(model) and len(model.inputs) == 1:
            calibrated = post_training_model(model, representative_dataset)
        if calibrated is not None:
            model, qat = calibrated, True
        elif has_graph(model):  # several inputs, or a layer our engine lacks: the converter calibrates
            model = int8_form(canonical_form(model))
    with _without_notices_that_do_not_apply():
        converter = _converter(model, postprocess)
    if quantization != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        if not qat:  # a QAT graph carries its ranges; the converter rejects this flag without calibration
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = IO_TYPES[input_type]
        if postprocess is None:  # the post-process op gives float32 (a uint8 output adds a QUANTIZE each)
            converter.inference_output_type = IO_TYPES[output_type]
        if representative_dataset is not None and not qat:
            converter.representative_dataset = _representative(representative_dataset)
    with contextlib.redirect_stdout(io.StringIO()), _without_notices_that_do_not_apply():  # Keras 3's export
        return converter.convert()  # prints every captured variable


