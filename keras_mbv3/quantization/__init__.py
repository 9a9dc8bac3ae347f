"""Export to TFLite/LiteRT and (tf_keras line) quantization-aware training."""

from keras_mbv3.quantization.export import export_tflite

__all__ = ["export_tflite"]
