"""SSDLite's parts after the backbone (paper Section 6.2; torchvision ``ssdlite.py``).

Every conv is "separable" as SSDLite's name says: depthwise 3x3 convs in the
extra blocks and heads, never a full 3x3 conv. Convs start from N(0, 0.03) as
torchvision's, BN uses epsilon 1e-3 and ReLU6 follows every BN.
"""

from keras_mbv3 import checks
from keras_mbv3.backend import keras, register
from keras_mbv3.layers.composite import CompositeLayer
from keras_mbv3.layers.conv_bn import conv_bn_act
from keras_mbv3.layers.depthwise import DepthwiseConv2D

BN_MOMENTUM = 0.97  # torchvision's SSDLite: BatchNorm2d momentum 0.03 in the torch convention
INIT_STDDEV = 0.03


def _normal():
    return keras.initializers.RandomNormal(stddev=INIT_STDDEV)


class _SeparableParts(CompositeLayer):
    """Conv + BN + ReLU6 triples named ``{name}_{part}``, ``{name}_{part}_bn``, ``{name}_{part}_relu6``."""

    def _conv_bn_relu6(self, conv):
        return conv_bn_act(conv, "relu6", self.bn_momentum)

    def _pointwise(self, part, filters):
        conv = keras.layers.Conv2D(filters, 1, use_bias=False, kernel_initializer=_normal(), **self._part(part))
        return self._conv_bn_relu6(conv)

    def _depthwise(self, part, strides):
        conv = DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False,
                               depthwise_initializer=_normal(), **self._part(part))  # fmt: skip
        return self._conv_bn_relu6(conv)

    def call(self, inputs):
        x = inputs
        for layer in self.parts:
            x = layer(x)
        return x


@register
class SSDLiteExtraBlock(_SeparableParts):
    """An SSDLite extra feature block: halves the resolution.

    1x1 conv to ``filters // 2`` + BN + ReLU6, 3x3 depthwise conv stride 2
    ("same" padding) + BN + ReLU6, 1x1 conv to ``filters`` + BN + ReLU6; convs
    without bias. Sub-layers: ``{name}_reduce``, ``{name}_depthwise``,
    ``{name}_expand``, each with ``_bn`` and ``_relu6``.

    Args:
        filters: output channels (512, 256, 256, 128 in SSDLite).
        bn_momentum: momentum of the BatchNormalizations, in (0, 1).

    Input shape: ``(batch, H, W, C)``.
    Output shape: ``(batch, ceil(H / 2), ceil(W / 2), filters)``.
    """

    def __init__(self, filters, bn_momentum=BN_MOMENTUM, **kwargs):
        super().__init__(**kwargs)
        self.filters = checks.positive_int("filters", filters)
        if self.filters < 2:
            checks.fail("filters", filters, "an integer >= 2 (the block narrows to filters // 2)")
        self.bn_momentum = checks.momentum("bn_momentum", bn_momentum)

    def build(self, input_shape):
        self.parts = (self._pointwise("reduce", self.filters // 2) + self._depthwise("depthwise", 2)
                       + self._pointwise("expand", self.filters))  # fmt: skip
        self._build_chain(self.parts, tuple(input_shape))
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = tuple(input_shape)
        half = [None if size is None else -(-size // 2) for size in (height, width)]
        return (batch, half[0], half[1], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, bn_momentum=self.bn_momentum)
        return config


@register
class SSDLiteHead(_SeparableParts):
    """An SSDLite prediction head on one feature map: ``values`` numbers per anchor.

    3x3 depthwise conv + BN + ReLU6, then a 1x1 conv with bias to
    ``anchors * values`` channels, reshaped so that each anchor is a row
    (row order: y, then x, then anchor, the order of
    ``keras_mbv3.detection.default_anchors``). Sub-layers: ``{name}_depthwise``
    (with ``_bn`` and ``_relu6``), ``{name}_conv``, ``{name}_reshape``.

    Args:
        anchors: anchors per location (6 in SSDLite).
        values: numbers per anchor: 4 for box encodings, ``num_classes`` for class logits.
        bn_momentum: momentum of the BatchNormalization, in (0, 1).

    Input shape: ``(batch, H, W, C)``.
    Output shape: ``(batch, H * W * anchors, values)``.
    """

    def __init__(self, anchors, values, bn_momentum=BN_MOMENTUM, **kwargs):
        super().__init__(**kwargs)
        self.anchors = checks.positive_int("anchors", anchors)
        self.values = checks.positive_int("values", values)
        self.bn_momentum = checks.momentum("bn_momentum", bn_momentum)

    def build(self, input_shape):
        conv = keras.layers.Conv2D(self.anchors * self.values, 1, kernel_initializer=_normal(), **self._part("conv"))
        reshape = keras.layers.Reshape((-1, self.values), **self._part("reshape"))
        self.parts = self._depthwise("depthwise", 1) + [conv, reshape]
        self._build_chain(self.parts, tuple(input_shape))
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = tuple(input_shape)
        rows = None if height is None or width is None else height * width * self.anchors
        return (batch, rows, self.values)

    def get_config(self):
        config = super().get_config()
        config.update(anchors=self.anchors, values=self.values, bn_momentum=self.bn_momentum)
        return config
