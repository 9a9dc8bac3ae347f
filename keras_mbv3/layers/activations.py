"""The paper's piecewise-linear activations, as layers."""

import tensorflow as tf

from keras_mbv3 import checks
from keras_mbv3.backend import keras, register

ACTIVATIONS = ("relu", "hard_swish")
GATES = ("hard_sigmoid", "sigmoid")


@register
class HardSigmoid(keras.layers.Layer):
    """``relu6(x + 3) / 6``, the gate of the squeeze-and-excite block.

    Input shape: any. Output shape: same as the input.
    """

    def call(self, inputs):
        return tf.nn.relu6(inputs + 3.0) * (1.0 / 6.0)

    def compute_output_shape(self, input_shape):
        return input_shape


@register
class HardSwish(keras.layers.Layer):
    """``x * relu6(x + 3) / 6``, the paper's h-swish.

    Written so that the TFLite converter fuses it into one ``HARD_SWISH`` op in
    float export.

    Input shape: any. Output shape: same as the input.
    """

    def call(self, inputs):
        return inputs * tf.nn.relu6(inputs + 3.0) * (1.0 / 6.0)

    def compute_output_shape(self, input_shape):
        return input_shape


def activation_layer(kind, name, dtype=None):
    """A new layer for ``kind``: one of ``ACTIVATIONS + GATES``."""
    checks.one_of("activation", kind, ACTIVATIONS + GATES)
    if kind == "relu":
        return keras.layers.ReLU(name=name, dtype=dtype)
    if kind == "hard_swish":
        return HardSwish(name=name, dtype=dtype)
    if kind == "hard_sigmoid":
        return HardSigmoid(name=name, dtype=dtype)
    return keras.layers.Activation("sigmoid", name=name, dtype=dtype)
