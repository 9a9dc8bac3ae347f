"""Post-training int8 as other tools make it, to measure ours against (``benchmarks/ptq_vs_qat.py``).

* ``plain_converter_int8``: the TFLite converter on the Keras model as it is,
  what keras.applications users get: int8 ``HARD_SWISH`` ops, which XNNPACK
  does not run, so the graph splits (Small at 224: 20 partitions).
* ``ai_edge_quantizer_int8``: Google's LiteRT post-training tool
  (``ai-edge-quantizer``, the ``compare`` extra) with its ``static_wi8_ai8``
  recipe on a float ``.tflite``; it keeps ``HARD_SWISH`` too.
"""

import numpy as np
import tensorflow as tf

from keras_mbv3.quantization.converter import IO_TYPES
from keras_mbv3.quantization.litert import interpreter

SIGNATURE = "serving_default"


def plain_converter_int8(model, images, input_type="float32", output_type="uint8"):
    """``.tflite`` bytes: the converter's full-integer post-training quantization of ``model`` as it is."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = IO_TYPES[input_type]
    converter.inference_output_type = IO_TYPES[output_type]
    converter.representative_dataset = lambda: ([image[None].astype(np.float32)] for image in images)
    return converter.convert()


def ai_edge_quantizer_int8(float_content, images):
    """``.tflite`` bytes: ai-edge-quantizer's ``static_wi8_ai8`` of the float ``float_content``, calibrated on ``images``.

    ``float_content`` must keep its tensor names (``export_tflite(..., strip_names=False)``):
    the tool's calibration reads them (an ``AttributeError`` in it otherwise).

    Its I/O are int8 (with their scales; ``litert.predict`` converts). Raises
    ``ImportError`` naming the extra when the package is not installed.
    """
    try:
        from ai_edge_quantizer import quantizer, recipe
    except ImportError as error:
        raise ImportError("ai-edge-quantizer is not installed: `pip install keras-mbv3[compare]`") from error
    runner = interpreter(float_content)
    (name,) = runner.get_signature_list()[SIGNATURE]["inputs"]
    tool = quantizer.Quantizer(bytearray(float_content))
    tool.load_quantization_recipe(recipe.static_wi8_ai8())
    calibration = tool.calibrate({SIGNATURE: [{name: image[None].astype(np.float32)} for image in images]})
    return bytes(tool.quantize(calibration, enable_progress_report=False).quantized_model)
