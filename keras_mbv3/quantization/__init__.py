"""Export to TFLite/LiteRT and (tf_keras line) quantization-aware training."""

from keras_mbv3.quantization.export import export_tflite
from keras_mbv3.quantization.qat import quantize_model, quantize_scope

__all__ = ["export_tflite", "quantize_model", "quantize_scope"]
