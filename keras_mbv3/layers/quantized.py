"""Layers of Keras 3 quantization-aware training: fake-quantized tensors and weights.

``keras_mbv3.quantization`` builds a QAT model from these on Keras 3 (tfmot's
wrappers need tf_keras). They are ordinary registered layers: a QAT model
trains, saves to ``.keras`` and loads like any other. Fake quantization is
``keras.quantizers.fake_quant_with_min_max_vars``, which lowers to
``tf.quantization.fake_quant_with_min_max_vars(_per_channel)``: the ops that
the TFLite converter reads as the ranges of an int8 model; on JAX and PyTorch,
the same computation (``keras_mbv3.layers.fake_quant``).

* ``FakeQuant``: a per-tensor int8 range for an activation, moving with the
  data in training (or fixed, for a gate whose range is known).
* ``QuantHardGate``: a ``HardGate`` and its output's fixed int8 range [0, 6].
* ``QuantConv2D``, ``QuantDepthwiseConv2D``, ``QuantDense``: the Keras layers
  with their kernel fake-quantized symmetric and narrow range ([-127, 127]),
  as TFLite stores int8 weights: per output channel (per tensor for dense).
"""

from keras_mbv3 import checks
from keras_mbv3.backend import keras, register
from keras_mbv3.layers.activations import HardGate
from keras_mbv3.layers.depthwise import DepthwiseConv2D
from keras_mbv3.layers.fake_quant import batch_range, fake_quant, gate_fake_quant

ops = keras.ops
EMA_DECAY = 0.999  # tfmot's


def fake_quant_kernel(kernel, axis):
    """``kernel`` fake-quantized to int8 per channel along ``axis`` (None: per tensor).

    Symmetric and narrow range: scale max|w| / 127, zero point 0.
    """
    rank = len(kernel.shape)
    if axis is not None and axis % rank != rank - 1 and keras.backend.backend() == "tensorflow":
        # TensorFlow's per-channel op quantizes the last axis (``fake_quant`` on JAX and PyTorch takes any axis)
        return ops.swapaxes(fake_quant_kernel(ops.swapaxes(kernel, axis, -1), -1), axis, -1)
    reduce = None if axis is None else [a for a in range(rank) if a != axis % rank]
    bound = ops.maximum(ops.max(ops.abs(kernel), axis=reduce), 1e-8)  # an all-zero channel still has a scale
    return fake_quant(kernel, -bound, bound, narrow_range=True, axis=axis)


@register
class FakeQuant(keras.layers.Layer):
    """Per-tensor int8 fake quantization of an activation.

    The range ``[range_min, range_max]`` always holds 0 (and ``[-floor, floor]``).
    In training it moves as tfmot's does: each step, an exponential moving
    average (decay 0.999) of the batch min and max, and the batch is quantized
    with the updated range; in inference the range is used as it is.
    ``keras_mbv3.quantization`` starts it at the float model's range on
    calibration images. With ``fixed_range`` the range never moves (the
    ``HardGate`` output: [0, 6]).

    Args:
        fixed_range: None, or ``(min, max)`` for a range that never moves.
        floor: the range holds at least ``[-floor, floor]`` (the input of a
            ``HardGate`` holds its domain [-3, 3], see ``calibration.GATE_INPUT_RANGE``).
        ema_decay: the moving average's decay per training step.

    Input shape: any. Output shape: same as the input.
    """

    def __init__(self, fixed_range=None, floor=0.0, ema_decay=EMA_DECAY, **kwargs):
        super().__init__(**kwargs)
        if fixed_range is not None:
            if len(fixed_range) != 2 or not fixed_range[0] <= 0 <= fixed_range[1] or fixed_range[0] == fixed_range[1]:
                checks.fail("fixed_range", fixed_range, "None or (min, max) with min <= 0 <= max and min < max")
            fixed_range = (float(fixed_range[0]), float(fixed_range[1]))
        self.fixed_range = fixed_range
        if not isinstance(floor, (int, float)) or floor < 0:
            checks.fail("floor", floor, "a number >= 0")
        self.floor = float(floor)
        self.ema_decay = checks.fraction("ema_decay", ema_decay)

    def build(self, input_shape):
        low, high = self.fixed_range or (min(-6.0, -self.floor), max(6.0, self.floor))
        self.range_min = self.add_weight(
            name="range_min", shape=(), initializer=keras.initializers.Constant(low), trainable=False,
            aggregation="mean", autocast=False,
        )  # fmt: skip
        self.range_max = self.add_weight(
            name="range_max", shape=(), initializer=keras.initializers.Constant(high), trainable=False,
            aggregation="mean", autocast=False,
        )  # fmt: skip

    def call(self, inputs, training=None):
        if training and self.fixed_range is None:
            # a statistic, as on TensorFlow (whose variables cut the gradient): on JAX the range's gradient reached the
            # batch's extremes through the updated range, and Small's QAT step accessed 12.4 GB, now 6.9 (float 5.9)
            batch_min, batch_max = batch_range(ops.stop_gradient(ops.cast(inputs, "float32")))
            low, high = ops.minimum(batch_min, -self.floor), ops.maximum(batch_max, self.floor)
            decay = self.ema_decay  # low <= -floor <= 0 <= floor <= high: the range holds 0
            self.range_min.assign(decay * self.range_min + (1.0 - decay) * low)
            self.range_max.assign(decay * self.range_max + (1.0 - decay) * high)
        return fake_quant(inputs, self.range_min, self.range_max, input_gradient_only=bool(training))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(fixed_range=self.fixed_range, floor=self.floor, ema_decay=self.ema_decay)
        return config


@register
class QuantHardGate(HardGate):
    """``HardGate`` with its output fake-quantized on its fixed int8 range [0, 6] (``gate_fake_quant``).

    One layer where a ``HardGate`` and a ``FakeQuant`` of fixed range [0, 6] gave
    the same values and gradients: it converts to the same int8 ``ADD`` with a
    fused ``RELU6``, and on PyTorch takes half the time (``gate_fake_quant``).
    """

    def call(self, inputs, training=None):
        return gate_fake_quant(inputs, *self.OUTPUT_RANGE, training=bool(training))


@register
class QuantConv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` with its kernel fake-quantized per output channel (``fake_quant_kernel``)."""

    def convolution_op(self, inputs, kernel):
        return super().convolution_op(inputs, fake_quant_kernel(kernel, axis=-1))


@register
class QuantDepthwiseConv2D(DepthwiseConv2D):
    """``keras.layers.DepthwiseConv2D`` (depth multiplier 1) with its kernel fake-quantized per channel.

    The kernel ``(k, k, channels, 1)`` is quantized along its channel axis, as
    TFLite quantizes a depthwise filter ``(1, k, k, channels)``.
    """

    def __init__(self, kernel_size, **kwargs):
        super().__init__(kernel_size, **kwargs)
        if self.depth_multiplier != 1:
            checks.fail("depth_multiplier", self.depth_multiplier, "1 (per-channel int8 depthwise weights)")

    def depthwise_op(self, inputs, kernel):
        return super().depthwise_op(inputs, fake_quant_kernel(kernel, axis=2))


@register
class QuantDense(keras.layers.Dense):
    """``keras.layers.Dense`` with its kernel fake-quantized per tensor.

    Per tensor, as tfmot does: the converter transposes the kernel for
    ``FULLY_CONNECTED`` and rejects a per-unit range on the transposed axis
    ("tfl.transpose op has mismatched quantized axes").
    """

    def call(self, inputs, training=None):
        outputs = ops.matmul(inputs, fake_quant_kernel(self.kernel, axis=None))
        if self.use_bias:
            outputs = ops.add(outputs, self.bias)
        return outputs if self.activation is None else self.activation(outputs)
