"""MobileNetV3 building blocks as Keras layers (Keras 3 and tf_keras).

Example::

    from keras_mbv3 import keras
    from keras_mbv3.layers import HardSwish, InvertedResidual

    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same")(inputs)
    x = HardSwish()(x)
    x = InvertedResidual(24, kernel_size=5, strides=2, expanded_filters=64,
                         se_ratio=0.25, activation="hard_swish")(x)
"""

from keras_mbv3.backend import IS_KERAS_3
from keras_mbv3.layers.activations import HardGate, HardSigmoid, HardSwish
from keras_mbv3.layers.composite import CompositeLayer
from keras_mbv3.layers.divisible import make_divisible
from keras_mbv3.layers.inverted_residual import InvertedResidual
from keras_mbv3.layers.lraspp import LRASPP
from keras_mbv3.layers.space_to_depth import SpaceToDepth
from keras_mbv3.layers.ssdlite import SSDLiteExtraBlock, SSDLiteHead
from keras_mbv3.layers.squeeze_excite import SqueezeExcite

if IS_KERAS_3:  # the Keras 3 QAT engine's layers (tfmot's wrappers serve tf_keras)
    from keras_mbv3.layers.quantized import FakeQuant, QuantConv2D, QuantDense, QuantDepthwiseConv2D, QuantHardGate

__all__ = [
    "HardGate",
    "HardSigmoid",
    "HardSwish",
    "SqueezeExcite",
    "InvertedResidual",
    "LRASPP",
    "SpaceToDepth",
    "SSDLiteExtraBlock",
    "SSDLiteHead",
    "make_divisible",
    "CompositeLayer",
]
if IS_KERAS_3:
    __all__ += ["FakeQuant", "QuantConv2D", "QuantDense", "QuantDepthwiseConv2D", "QuantHardGate"]
