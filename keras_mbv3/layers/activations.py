"""The paper's piecewise-linear activations, as layers."""

from keras_mbv3 import checks
from keras_mbv3.backend import keras, register
from keras_mbv3.ops import relu6

ACTIVATIONS = ("relu", "hard_swish")
GATES = ("hard_sigmoid", "sigmoid")


@register
class HardGate(keras.layers.Layer):
    """``relu6(x + 3)``: the gate of the int8 form of the hard activations, range [0, 6].

    Converts to one TFLite ``ADD`` with a fused ``RELU6``, which XNNPACK runs in int8.

    Input shape: any. Output shape: same as the input.
    """

    OUTPUT_RANGE = (0.0, 6.0)  # relu6's: the fixed int8 range of the output in both QAT engines

    def call(self, inputs):
        return relu6(inputs + 3.0)

    def compute_output_shape(self, input_shape):
        return input_shape


@register
class HardSigmoid(keras.layers.Layer):
    """``relu6(x + 3) / 6``, the gate of the squeeze-and-excite block.

    ``keras_mbv3.quantization`` rewrites it for int8 as ``HardGate`` (``relu6(x + 3)``).

    Input shape: any. Output shape: same as the input.
    """

    def call(self, inputs):
        return relu6(inputs + 3.0) * (1.0 / 6.0)

    def compute_output_shape(self, input_shape):
        return input_shape


@register
class HardSwish(keras.layers.Layer):
    """``x * relu6(x + 3) / 6``, the paper's h-swish.

    Written so that the TFLite converter fuses it into one ``HARD_SWISH`` op in
    float export (the fastest float form). ``keras_mbv3.quantization`` rewrites
    it for int8 as ``Multiply([HardGate(x), x])`` with the 1/6 folded into the
    convs that consume it: an ADD with fused RELU6 and a MUL, both taken by
    XNNPACK, where int8 ``HARD_SWISH`` is not.

    Input shape: any. Output shape: same as the input.
    """

    def call(self, inputs):
        return inputs * relu6(inputs + 3.0) * (1.0 / 6.0)

    def compute_output_shape(self, input_shape):
        return input_shape


def activation_layer(kind, name, dtype=None):
    """A new layer for ``kind``: one of ``ACTIVATIONS + GATES`` or ``"relu6"``."""
    checks.one_of("activation", kind, ACTIVATIONS + GATES + ("relu6",))
    if kind == "relu":
        return keras.layers.ReLU(name=name, dtype=dtype)
    if kind == "relu6":  # SSDLite's heads and extra blocks
        return keras.layers.ReLU(6.0, name=name, dtype=dtype)
    if kind == "hard_swish":
        return HardSwish(name=name, dtype=dtype)
    if kind == "hard_sigmoid":
        return HardSigmoid(name=name, dtype=dtype)
    return keras.layers.Activation("sigmoid", name=name, dtype=dtype)
