"""Quantization-aware training (our engine on Keras 3, tfmot on tf_keras) and export to TFLite/LiteRT."""

from keras_mbv3.quantization.export import Int8GraphError, export_tflite
from keras_mbv3.quantization.metadata import ImageModelMetadata, read_metadata
from keras_mbv3.quantization.postprocess import DetectionPostProcess
from keras_mbv3.quantization.qat import KeepXnnpackLimits, keep_xnnpack_limits, quantize_model, quantize_scope

__all__ = ["export_tflite", "quantize_model", "quantize_scope", "KeepXnnpackLimits", "keep_xnnpack_limits",
           "Int8GraphError", "ImageModelMetadata", "read_metadata", "DetectionPostProcess"]  # fmt: skip
