"""The few tensor ops the layers need, on every Keras 3 backend and on tf_keras.

Keras 3 layers compute with ``keras.ops`` (TensorFlow, JAX or PyTorch behind
it); tf_keras has no ``keras.ops``, and computes with TensorFlow. Where the
TFLite export needs a TensorFlow op by name (``SPACE_TO_DEPTH``, which XNNPACK
runs in int8), the TensorFlow backend calls it and the others compute the same
values with reshapes.
"""

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


def name_scope(name):
    """The backend's name scope (nested weight names when a composite layer builds its parts)."""
    if IS_KERAS_3:
        return keras.name_scope(name)
    import tensorflow as tf

    return tf.name_scope(name)
