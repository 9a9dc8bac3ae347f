"""The paper's Table 1 (Large) and Table 2 (Small) as data, one row per bneck.

Each row reads like the paper: kernel, expansion size, output channels, SE,
non-linearity, stride. The first row of each table has ``expanded == 16``, the
input size, which means no expand conv. Width multipliers scale channels the way
keras.applications does (see ``scaled_blocks``), so that parameter counts and
weight files match.
"""

import dataclasses

from keras_mbv3.layers.divisible import make_divisible

RE, HS = "relu", "hard_swish"
STEM_FILTERS = 16


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One bneck row of Table 1 or 2 (channels at width 1.0)."""

    kernel: int
    expanded: int
    filters: int
    se: bool
    activation: str
    strides: int


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    """A whole network: bnecks plus the width of the last 1x1 conv of the top."""

    name: str
    blocks: tuple
    last_point_filters: int


B = BlockSpec
LARGE = NetworkSpec("large", (
    #  k  exp  out   SE    NL  s
    B(3,  16,  16, False, RE, 1),
    B(3,  64,  24, False, RE, 2),
    B(3,  72,  24, False, RE, 1),
    B(5,  72,  40, True,  RE, 2),
    B(5, 120,  40, True,  RE, 1),
    B(5, 120,  40, True,  RE, 1),
    B(3, 240,  80, False, HS, 2),
    B(3, 200,  80, False, HS, 1),
    B(3, 184,  80, False, HS, 1),
    B(3, 184,  80, False, HS, 1),
    B(3, 480, 112, True,  HS, 1),
    B(3, 672, 112, True,  HS, 1),
    B(5, 672, 160, True,  HS, 2),
    B(5, 960, 160, True,  HS, 1),
    B(5, 960, 160, True,  HS, 1),
), last_point_filters=1280)  # fmt: skip

SMALL = NetworkSpec("small", (
    #  k  exp  out   SE    NL  s
    B(3,  16,  16, True,  RE, 2),
    B(3,  72,  24, False, RE, 2),
    B(3,  88,  24, False, RE, 1),
    B(5,  96,  40, True,  HS, 2),
    B(5, 240,  40, True,  HS, 1),
    B(5, 240,  40, True,  HS, 1),
    B(5, 120,  48, True,  HS, 1),
    B(5, 144,  48, True,  HS, 1),
    B(5, 288,  96, True,  HS, 2),
    B(5, 576,  96, True,  HS, 1),
    B(5, 576,  96, True,  HS, 1),
), last_point_filters=1024)  # fmt: skip
del B


def minimalistic(spec):
    """The paper's minimalistic variant: 3x3 kernels, ReLU only, no SE."""
    blocks = tuple(dataclasses.replace(b, kernel=3, se=False, activation=RE) for b in spec.blocks)
    return dataclasses.replace(spec, name=spec.name + "_minimalistic", blocks=blocks)


def relu_only(spec):
    """Every hard-swish replaced by ReLU, all else kept (a latency reference, not a paper model)."""
    blocks = tuple(dataclasses.replace(b, activation=RE) for b in spec.blocks)
    return dataclasses.replace(spec, name=spec.name + "_relu", blocks=blocks)


def reduced_tail(spec):
    """Halve the channels of the last stage (Section 6.1.1 of the paper)."""
    tail = max(i for i, b in enumerate(spec.blocks) if b.strides == 2)
    blocks = tuple(
        dataclasses.replace(b, filters=b.filters // 2, expanded=b.expanded // 2 if i > tail else b.expanded)
        if i >= tail
        else b
        for i, b in enumerate(spec.blocks)
    )
    return dataclasses.replace(spec, blocks=blocks, last_point_filters=spec.last_point_filters // 2)


@dataclasses.dataclass(frozen=True)
class ScaledBlock:
    """A bneck with the channel counts and dilation a given model builds."""

    name: str
    filters: int
    kernel: int
    strides: int
    expanded: object  # int, or None for no expand conv
    se: bool
    activation: str
    dilation: int
    output_stride: int  # stride of this block's output relative to the input


def scaled_blocks(spec, alpha=1.0, output_stride=32):
    """The rows of ``spec`` at width ``alpha``, dilated for ``output_stride``.

    Channels follow keras.applications: outputs are ``make_divisible(filters * alpha)``
    and the expand conv has ``make_divisible(in_channels * expanded / in_unscaled)``
    channels, where ``in_channels`` is the (scaled) input of the block. Once the
    stride would pass ``output_stride`` a stride-2 block runs at stride 1 and it
    and the following blocks double their dilation (as torchvision), so that a
    block's nominal stride is always ``output_stride * dilation``.
    """
    in_unscaled, in_channels = STEM_FILTERS, STEM_FILTERS
    stride, rate = 2, 1
    result = []
    for index, block in enumerate(spec.blocks):
        filters = make_divisible(block.filters * alpha)
        expanded = None
        if block.expanded != in_unscaled:
            expanded = make_divisible(in_channels * (block.expanded / in_unscaled))
        strides = block.strides
        if block.strides == 2 and stride * 2 > output_stride:
            strides, rate = 1, rate * 2
        elif block.strides == 2:
            stride *= 2
        result.append(ScaledBlock(
            name="expanded_conv" if index == 0 else f"expanded_conv_{index}",
            filters=filters, kernel=block.kernel, strides=strides, expanded=expanded,
            se=block.se, activation=block.activation, dilation=rate, output_stride=stride,
        ))  # fmt: skip
        in_unscaled, in_channels = block.filters, filters
    return result
