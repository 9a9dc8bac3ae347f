"""Lite R-ASPP, the paper's segmentation decoder (Section 6.3, Figure 10)."""

from keras_mbv3 import checks
from keras_mbv3.backend import IS_KERAS_3, keras, register
from keras_mbv3.layers.composite import CompositeLayer
from keras_mbv3.layers.conv_bn import conv_bn_act

BN_MOMENTUM = 0.99


def _is_shape(value):
    """A shape: a tuple or list (Keras 3), or a ``tf.TensorShape`` (tf_keras)."""
    return isinstance(value, (list, tuple)) or (not IS_KERAS_3 and type(value).__name__ == "TensorShape")


def _is_shape_pair(input_shape):
    return isinstance(input_shape, (list, tuple)) and len(input_shape) == 2 and all(map(_is_shape, input_shape))


def _upsample_factor(low_shape, high_shape):
    """Integer factor from the high-level to the low-level resolution (2 when unknown)."""
    low, high = tuple(low_shape[1:3]), tuple(high_shape[1:3])
    if None in low or None in high:
        return 2
    if low[0] % high[0] or low[1] % high[1] or low[0] // high[0] != low[1] // high[1]:
        checks.fail(
            "inputs",
            f"[low_level {low}, high_level {high}]",
            "low-level height and width that are the same integer multiple of the high-level ones",
        )
    return low[0] // high[0]


@register
class LRASPP(CompositeLayer):
    """Lite R-ASPP decoder: segmentation logits from low- and high-level features.

    On the high-level features: 1x1 conv (no bias) + BN + ReLU to ``filters``
    channels, multiplied by a gate of global average pool + 1x1 conv (no bias) +
    sigmoid, bilinearly upsampled to the low-level size, then 1x1 conv (bias) to
    ``num_classes``. On the low-level features: 1x1 conv (bias) to
    ``num_classes``. The two are summed. The upsampling factor is read from the
    input sizes at build time (2, stride 16 to stride 8, when they are unknown).

    Args:
        num_classes: number of output classes.
        filters: channels of the high-level branch (128 in the paper).
        bn_momentum: momentum of the BatchNormalization, in (0, 1). An argument
            (kept in ``get_config``) so that a reloaded model keeps it.

    Input shape: a list ``[low_level, high_level]`` of
        ``(batch, H, W, C_low)`` and ``(batch, H / f, W / f, C_high)`` for an integer f.
    Output shape: ``(batch, H, W, num_classes)``: logits, no softmax.
    """

    def __init__(self, num_classes, filters=128, bn_momentum=BN_MOMENTUM, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = checks.positive_int("num_classes", num_classes)
        self.filters = checks.positive_int("filters", filters)
        self.bn_momentum = checks.momentum("bn_momentum", bn_momentum)

    def build(self, input_shape):
        if not _is_shape_pair(input_shape):
            checks.fail("inputs", f"a tensor of shape {tuple(input_shape)}", "a list [low_level, high_level] of two 4D tensors")
        low_shape, high_shape = (tuple(s) for s in input_shape)
        factor = _upsample_factor(low_shape, high_shape)
        layers = keras.layers
        cbr_conv = layers.Conv2D(self.filters, 1, use_bias=False, **self._part("cbr_conv"))
        self.cbr_conv, self.cbr_bn, self.cbr_relu = conv_bn_act(
            cbr_conv, "relu", self.bn_momentum, bn_name=f"{self.name}_cbr_bn", activation_name=f"{self.name}_cbr_relu"
        )
        self.scale_pool = layers.GlobalAveragePooling2D(keepdims=True, **self._part("scale_pool"))
        self.scale_conv = layers.Conv2D(self.filters, 1, use_bias=False, **self._part("scale_conv"))
        self.scale_sigmoid = layers.Activation("sigmoid", **self._part("scale_sigmoid"))
        self.scale_mul = layers.Multiply(**self._part("scale_mul"))
        self.upsample = layers.UpSampling2D(factor, interpolation="bilinear", **self._part("upsample"))
        self.high_classifier = layers.Conv2D(self.num_classes, 1, **self._part("high_classifier"))
        self.low_classifier = layers.Conv2D(self.num_classes, 1, **self._part("low_classifier"))
        self.add = layers.Add(**self._part("add"))

        features = self._build_chain([self.cbr_conv, self.cbr_bn, self.cbr_relu], high_shape)
        scale = self._build_chain([self.scale_pool, self.scale_conv, self.scale_sigmoid], high_shape)
        gated = self._build_part(self.scale_mul, [features, scale])
        high_logits = self._build_chain([self.upsample, self.high_classifier], gated)
        low_logits = self._build_part(self.low_classifier, low_shape)
        self._build_part(self.add, [low_logits, high_logits])
        super().build(input_shape)

    def call(self, inputs):
        low, high = inputs
        features = self.cbr_relu(self.cbr_bn(self.cbr_conv(high)))
        scale = self.scale_sigmoid(self.scale_conv(self.scale_pool(high)))
        high_logits = self.high_classifier(self.upsample(self.scale_mul([features, scale])))
        return self.add([self.low_classifier(low), high_logits])

    def compute_output_shape(self, input_shape):
        low_shape = tuple(input_shape[0])
        return low_shape[:3] + (self.num_classes,)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, filters=self.filters, bn_momentum=self.bn_momentum)
        return config
