"""``DepthwiseConv2D``: Keras' layer, its convolution through ``keras_mbv3.ops.depthwise_conv``.

The same weights, names and outputs as ``keras.layers.DepthwiseConv2D``. On JAX's CPU a strided one trains faster:
its input gradient is a stride-1 convolution instead of XLA's generic loop (``ops.depthwise_conv``; Small's train
step at 224, batch 32, one core: 4.4 s against 5.6 s). On tf_keras it is tf_keras' layer itself, which tfmot's
quantize scheme knows by class.
"""

from keras_mbv3.backend import IS_KERAS_3, keras, register
from keras_mbv3.ops import depthwise_conv

if IS_KERAS_3:

    @register
    class DepthwiseConv2D(keras.layers.DepthwiseConv2D):
        """``keras.layers.DepthwiseConv2D``, computed by ``keras_mbv3.ops.depthwise_conv``.

        Input shape: ``(batch, height, width, channels)`` (channels last). Output shape: ``(batch, new_height,
        new_width, channels * depth_multiplier)``.
        """

        def depthwise_op(self, inputs, kernel):
            """The convolution of ``inputs`` with ``kernel`` (``(k, k, channels, depth_multiplier)``), without bias."""
            return depthwise_conv(inputs, kernel, strides=self.strides, padding=self.padding,
                                  data_format=self.data_format, dilation_rate=self.dilation_rate)  # fmt: skip

        def call(self, inputs):
            outputs = self.depthwise_op(inputs, self.kernel)
            if self.use_bias:
                shape = (-1, 1, 1) if self.data_format == "channels_first" else (-1,)
                outputs = keras.ops.add(outputs, keras.ops.reshape(self.bias, shape))
            return outputs if self.activation is None else self.activation(outputs)

else:
    DepthwiseConv2D = keras.layers.DepthwiseConv2D
