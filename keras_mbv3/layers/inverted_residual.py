"""The MobileNetV3 bottleneck ("bneck"): an inverted residual block."""

from keras_mbv3 import checks
from keras_mbv3.backend import keras, register
from keras_mbv3.layers.activations import ACTIVATIONS
from keras_mbv3.layers.composite import CompositeLayer
from keras_mbv3.layers.conv_bn import conv_bn_act
from keras_mbv3.layers.depthwise import DepthwiseConv2D
from keras_mbv3.layers.squeeze_excite import SqueezeExcite

BN_MOMENTUM = 0.999


def correct_pad(spatial_size, kernel_size):
    """Zero padding before a stride-2 'valid' conv, as keras.applications' ``correct_pad``.

    Args:
        spatial_size: ``(height, width)`` of the input; entries may be None.
        kernel_size: the (square) kernel size.

    Returns:
        ``((top, bottom), (left, right))``: one pixel less at the top and left
        for even or unknown sizes, so that outputs line up with TF "same"
        (never negative: a 1x1 kernel needs no padding).
    """
    half = kernel_size // 2
    if spatial_size[0] is None or spatial_size[1] is None:
        adjust = (1, 1)
    else:
        adjust = (1 - spatial_size[0] % 2, 1 - spatial_size[1] % 2)
    return ((max(half - adjust[0], 0), half), (max(half - adjust[1], 0), half))


@register
class InvertedResidual(CompositeLayer):
    """MobileNetV3 bneck: expand, depthwise, squeeze-excite, project, residual add.

    1x1 expand conv + BN + activation (absent when ``expanded_filters`` is None),
    ``kernel_size`` depthwise conv + BN + activation, ``SqueezeExcite`` on the
    expanded features when ``se_ratio`` is set, 1x1 project conv + BN, and an
    ``Add`` with the input when ``strides == 1`` and the channel count is kept.
    Convs have no bias; BN uses epsilon 1e-3 and, by default, momentum 0.999
    like keras.applications. A stride-2 depthwise conv is preceded by explicit zero
    padding (``correct_pad``) and uses "valid", so weights converted from
    keras.applications give the same outputs.

    Sub-layers are named like keras.applications: ``{name}_expand``,
    ``{name}_expand_bn``, ``{name}_expand_{activation}``, ``{name}_depthwise_pad``,
    ``{name}_depthwise``, ``{name}_depthwise_bn``, ``{name}_depthwise_{activation}``,
    ``{name}_squeeze_excite`` (with ``..._squeeze_excite_conv`` etc.),
    ``{name}_project``, ``{name}_project_bn``, ``{name}_add``.

    Args:
        filters: output channels.
        kernel_size: odd depthwise kernel size (3 or 5 in the paper).
        strides: 1 or 2.
        expanded_filters: channels after the expand conv; None for no expand conv
            (the depthwise conv then runs on the input channels).
        se_ratio: None for no squeeze-excite, else the squeeze ratio in (0, 1].
        activation: ``"relu"`` or ``"hard_swish"``.
        dilation_rate: depthwise dilation, with ``strides=1`` only.
        bn_momentum: momentum of the three BatchNormalizations, in (0, 1). An
            argument (kept in ``get_config``) rather than an attribute to set on
            the sub-layers afterwards, so that a reloaded model keeps it.

    Input shape: ``(batch, height, width, in_channels)``.
    Output shape: ``(batch, ceil(height / strides), ceil(width / strides), filters)``.
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        strides=1,
        expanded_filters=None,
        se_ratio=None,
        activation="relu",
        dilation_rate=1,
        bn_momentum=BN_MOMENTUM,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = checks.positive_int("filters", filters)
        self.kernel_size = checks.odd_kernel("kernel_size", kernel_size)
        self.strides = checks.one_of("strides", checks.positive_int("strides", strides), (1, 2))
        self.expanded_filters = None
        if expanded_filters is not None:
            self.expanded_filters = checks.positive_int("expanded_filters", expanded_filters)
        self.se_ratio = checks.fraction("se_ratio", se_ratio, allow_none=True)
        self.activation = checks.one_of("activation", activation, ACTIVATIONS)
        self.dilation_rate = checks.positive_int("dilation_rate", dilation_rate)
        if self.dilation_rate > 1 and self.strides != 1:
            checks.fail("dilation_rate", dilation_rate, "1 when strides=2 (dilate with strides=1)")
        self.bn_momentum = checks.momentum("bn_momentum", bn_momentum)

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if in_channels is None:
            checks.fail("input_shape", tuple(input_shape), "a known channel count (last axis)")
        layers = keras.layers
        self.expand = self.expand_bn = self.expand_act = None
        if self.expanded_filters is not None:
            expand = layers.Conv2D(self.expanded_filters, 1, padding="same", use_bias=False, **self._part("expand"))
            self.expand, self.expand_bn, self.expand_act = conv_bn_act(expand, self.activation, self.bn_momentum)
        self.depthwise_pad = None
        if self.strides == 2:
            padding = correct_pad(tuple(input_shape[1:3]), self.kernel_size)
            self.depthwise_pad = layers.ZeroPadding2D(padding, **self._part("depthwise_pad"))
        depthwise = DepthwiseConv2D(
            self.kernel_size,
            strides=self.strides,
            padding="valid" if self.strides == 2 else "same",
            dilation_rate=self.dilation_rate,
            use_bias=False,
            **self._part("depthwise"),
        )
        self.depthwise, self.depthwise_bn, self.depthwise_act = conv_bn_act(depthwise, self.activation,
                                                                            self.bn_momentum)  # fmt: skip
        self.squeeze_excite = None
        if self.se_ratio is not None:
            self.squeeze_excite = SqueezeExcite(self.se_ratio, **self._part("squeeze_excite"))
        project = layers.Conv2D(self.filters, 1, padding="same", use_bias=False, **self._part("project"))
        self.project, self.project_bn = conv_bn_act(project, None, self.bn_momentum)
        self.add = None
        if self.strides == 1 and in_channels == self.filters:
            self.add = layers.Add(**self._part("add"))
        output_shape = self._build_chain(self._main_path(), input_shape)
        if self.add is not None:
            self._build_part(self.add, [input_shape, output_shape])
        super().build(input_shape)

    def _main_path(self):
        """The sub-layers from input to projection, in order (absent ones left out)."""
        path = (
            self.expand, self.expand_bn, self.expand_act,
            self.depthwise_pad, self.depthwise, self.depthwise_bn, self.depthwise_act,
            self.squeeze_excite, self.project, self.project_bn,
        )  # fmt: skip
        return [layer for layer in path if layer is not None]

    def output_part(self):
        """The sub-layer whose output is the block's (``add``, else ``project_bn``): its tap once flattened."""
        return self.add if self.add is not None else self.project_bn

    def expansion_part(self):
        """The expand conv's activation (SSDLite's tap), or None without an expand conv."""
        return self.expand_act

    def width_arguments(self):
        """``{sub-layer: constructor argument}`` of the convs whose output channels an argument sets
        (NetAdapt's cuttable widths: ``expanded_filters`` for the expand conv, ``filters`` for the projection)."""
        found = {self.project: "filters"}
        if self.expand is not None:
            found[self.expand] = "expanded_filters"
        return found

    def call(self, inputs):
        x = inputs
        for layer in self._main_path():
            x = layer(x)
        if self.add is not None:
            x = self.add([inputs, x])
        return x

    def compute_output_shape(self, input_shape):
        def reduce(size):
            return None if size is None else -(-size // self.strides)

        return (input_shape[0], reduce(input_shape[1]), reduce(input_shape[2]), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            expanded_filters=self.expanded_filters,
            se_ratio=self.se_ratio,
            activation=self.activation,
            dilation_rate=self.dilation_rate,
            bn_momentum=self.bn_momentum,
        )
        return config
