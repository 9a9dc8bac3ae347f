"""The squeeze-and-excite block of MobileNetV3."""

from keras_mbv3 import checks
from keras_mbv3.backend import keras, register
from keras_mbv3.layers.activations import ACTIVATIONS, GATES, activation_layer
from keras_mbv3.layers.composite import CompositeLayer
from keras_mbv3.layers.divisible import make_divisible


@register
class SqueezeExcite(CompositeLayer):
    """Channel attention: ``x * gate(conv(act(conv(mean(x)))))``.

    Global average pool, 1x1 conv (with bias) to
    ``make_divisible(channels * se_ratio, divisor)`` channels, ``activation``,
    1x1 conv (with bias) back to ``channels``, ``gate``, multiply with the input.
    Sub-layers are named like keras.applications: ``{name}_avg_pool``,
    ``{name}_conv``, ``{name}_relu``, ``{name}_conv_1``, ``{name}_hard_sigmoid``,
    ``{name}_mul``.

    Args:
        se_ratio: squeeze ratio in (0, 1].
        divisor: the squeezed channel count is rounded to a multiple of it.
        activation: ``"relu"`` or ``"hard_swish"``, after the first conv.
        gate: ``"hard_sigmoid"`` (the paper's) or ``"sigmoid"``.

    Input shape: ``(batch, height, width, channels)``.
    Output shape: same as the input.
    """

    def __init__(self, se_ratio=0.25, divisor=8, activation="relu", gate="hard_sigmoid", **kwargs):
        super().__init__(**kwargs)
        self.se_ratio = checks.fraction("se_ratio", se_ratio)
        self.divisor = checks.positive_int("divisor", divisor)
        self.activation = checks.one_of("activation", activation, ACTIVATIONS)
        self.gate = checks.one_of("gate", gate, GATES)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            checks.fail("input_shape", tuple(input_shape), "a known channel count (last axis)")
        squeezed = make_divisible(channels * self.se_ratio, self.divisor)
        layers = keras.layers
        self.avg_pool = layers.GlobalAveragePooling2D(keepdims=True, **self._part("avg_pool"))
        self.reduce = layers.Conv2D(squeezed, 1, padding="same", **self._part("conv"))
        self.reduce_act = activation_layer(self.activation, **self._part(self.activation))
        self.expand = layers.Conv2D(channels, 1, padding="same", **self._part("conv_1"))
        self.gate_act = activation_layer(self.gate, **self._part(self.gate))
        self.mul = layers.Multiply(**self._part("mul"))
        gate_shape = self._build_chain(self._gate_path(), input_shape)
        self._build_part(self.mul, [input_shape, gate_shape])
        super().build(input_shape)

    def _gate_path(self):
        return [self.avg_pool, self.reduce, self.reduce_act, self.expand, self.gate_act]

    def call(self, inputs):
        gate = inputs
        for layer in self._gate_path():
            gate = layer(gate)
        return self.mul([inputs, gate])

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            se_ratio=self.se_ratio, divisor=self.divisor, activation=self.activation, gate=self.gate
        )
        return config
