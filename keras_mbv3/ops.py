"""The few tensor ops the layers need, on every Keras 3 backend and on tf_keras.

Keras 3 layers compute with ``keras.ops`` (TensorFlow, JAX or PyTorch behind
it); tf_keras has no ``keras.ops``, and computes with TensorFlow. Where the
TFLite export needs a TensorFlow op by name (``SPACE_TO_DEPTH``, which XNNPACK
runs in int8), the TensorFlow backend calls it and the others compute the same
values with reshapes.
"""

import functools

from keras_mbv3.backend import IS_KERAS_3, keras


def relu6(x):
    if IS_KERAS_3:
        return keras.ops.relu6(x)
    import tensorflow as tf

    return tf.nn.relu6(x)


def space_to_depth(x, block_size):
    """``(b, H, W, C)`` to ``(b, H / s, W / s, s * s * C)``; channel ``(i * s + j) * C + c`` is pixel (i, j) of a patch."""
    if not IS_KERAS_3 or keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.nn.space_to_depth(x, block_size)
    ops, s = keras.ops, block_size
    _, height, width, channels = x.shape
    patches = ops.reshape(x, (-1, height // s, s, width // s, s, channels))
    patches = ops.transpose(patches, (0, 1, 3, 2, 4, 5))
    return ops.reshape(patches, (-1, height // s, width // s, s * s * channels))


def depthwise_conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
    """``keras.ops.depthwise_conv``: ``(b, H, W, C)`` (channels last) and ``(k, k, C, m)`` to ``(b, H', W', C * m)``.

    On JAX's CPU a strided one takes its input's gradient as an explicit zero-interleaved padding and a stride-1
    convolution (``_jax_strided_depthwise``), the same values as the ``lhs_dilation`` convolution that JAX's
    transpose gives, which XLA's CPU runs as a generic loop: (32, 28, 28, 72) to (32, 57, 57, 72), 3x3, took
    1.0-1.1 s against 0.28 s. Small's train step at 224, batch 32, one core: 4.4 s against 5.6 s. Elsewhere (other
    backends, accelerators, channels first, dilation or a depth multiplier) it is Keras' op.
    """
    channels_last = (data_format or keras.backend.image_data_format()) == "channels_last"
    if IS_KERAS_3 and keras.backend.backend() == "jax" and channels_last:
        strides = (strides,) * 2 if isinstance(strides, int) else tuple(strides)
        dilation_rate = (dilation_rate,) * 2 if isinstance(dilation_rate, int) else tuple(dilation_rate)
        if max(strides) > 1 and dilation_rate == (1, 1) and kernel.shape[-1] == 1 and _jax_on_cpu():
            import jax.numpy as jnp

            return _jax_strided_depthwise()(jnp.asarray(inputs), jnp.asarray(kernel), strides, padding)
    return keras.ops.depthwise_conv(inputs, kernel, strides=strides, padding=padding, data_format=data_format,
                                    dilation_rate=dilation_rate)  # fmt: skip


def _jax_on_cpu():
    import jax

    return jax.default_backend() == "cpu"


@functools.cache
def _jax_strided_depthwise():
    """A strided depthwise convolution on JAX whose input gradient is a stride-1 convolution of the zero-interleaved
    upstream gradient with the flipped kernel. The interleave sits behind an ``optimization_barrier``: XLA otherwise
    folds the padding back into the convolution as the ``lhs_dilation`` it replaces."""
    import jax
    import jax.numpy as jnp

    def convolve(x, kernel, strides, padding):
        return keras.ops.depthwise_conv(x, kernel, strides=strides, padding=padding)

    @functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
    def strided(x, kernel, strides, padding):
        return convolve(x, kernel, strides, padding)

    def forward(x, kernel, strides, padding):
        return convolve(x, kernel, strides, padding), (x, kernel)

    def backward(strides, padding, residuals, upstream):
        x, kernel = residuals
        (kernel_gradient,) = jax.vjp(lambda k: convolve(x, k, strides, padding), kernel)[1](upstream)
        config = [(0, 0, 0)]
        for axis, stride in zip((1, 2), strides):
            size, out, window = x.shape[axis], upstream.shape[axis], kernel.shape[axis - 1]
            low = jax.lax.padtype_to_pads((size,), (window,), (stride,), padding.upper())[0][0]
            # the gradient of the padded input, cropped to the input: (size + window - 1) values for a VALID window
            config.append((window - 1 - low, size + low - (out - 1) * stride - 1, stride - 1))
        interleaved = jax.lax.pad(upstream, jnp.zeros((), upstream.dtype), config + [(0, 0, 0)])
        interleaved = jax.lax.optimization_barrier(interleaved)
        channels = x.shape[-1]
        flipped = jnp.reshape(kernel[::-1, ::-1], (*kernel.shape[:2], 1, channels))
        input_gradient = jax.lax.conv_general_dilated(
            interleaved, flipped, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=channels,
        )  # fmt: skip
        return input_gradient, kernel_gradient

    strided.defvjp(forward, backward)
    return strided


def name_scope(name):
    """The backend's name scope (nested weight names when a composite layer builds its parts)."""
    if IS_KERAS_3:
        return keras.name_scope(name)
    import tensorflow as tf

    return tf.name_scope(name)


class _BackendOps:
    """``keras.ops``' flat namespace over one backend's modules (numpy, core, nn, math, in that order)."""

    def __init__(self, backend):
        self.name = backend.name
        self._modules = [getattr(backend, part) for part in ("numpy", "core", "nn", "math")]

    def __getattr__(self, name):
        for module in self._modules:
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"no op {name!r} in the {self.name} backend")


def tensor_ops():
    """The functions of ``keras.ops`` (by the same names) for the tensors at hand.

    The Keras backend in use, except inside a TensorFlow graph (a ``tf.data`` map
    on JAX or PyTorch) and on tf_keras, where they are TensorFlow's: tf.data stays
    the input pipeline on every backend. Keras' own preprocessing layers switch the
    same way (``DynamicBackend``). On tf_keras this imports Keras 3's TensorFlow
    backend, which TensorFlow installs beside tf_keras (2 s, once).
    """
    from keras.src.utils import backend_utils  # Keras 3's, on both lines

    in_tensorflow = not IS_KERAS_3 or backend_utils.in_tf_graph()
    return _BackendOps(backend_utils.DynamicBackend("tensorflow" if in_tensorflow else None))
