"""``SpaceToDepth``: image patches moved into channels (``tf.nn.space_to_depth`` on TensorFlow)."""

from keras_mbv3 import checks
from keras_mbv3.backend import keras, register
from keras_mbv3.ops import space_to_depth


@register
class SpaceToDepth(keras.layers.Layer):
    """Each ``block_size x block_size`` patch becomes one pixel with ``block_size**2`` times the channels.

    Output channel ``(i * block_size + j) * C + c`` holds input channel ``c`` at
    row offset ``i`` and column offset ``j`` of the patch (TensorFlow's order).
    ``keras_mbv3.quantization`` uses it for the int8 form of a 3x3 stride-2 conv
    on few channels (the stem on RGB images): this layer and a 2x2 conv on
    ``4 * C`` channels compute the same outputs.

    Input shape: ``(batch, H, W, C)``, H and W multiples of ``block_size``.
    Output shape: ``(batch, H / block_size, W / block_size, C * block_size**2)``.
    """

    def __init__(self, block_size=2, **kwargs):
        super().__init__(**kwargs)
        if checks.positive_int("block_size", block_size) < 2:
            checks.fail("block_size", block_size, "an integer of at least 2")
        self.block_size = int(block_size)

    def call(self, inputs):
        return space_to_depth(inputs, self.block_size)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        b = self.block_size
        return (batch, None if height is None else height // b, None if width is None else width // b,
                None if channels is None else channels * b * b)  # fmt: skip

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}
