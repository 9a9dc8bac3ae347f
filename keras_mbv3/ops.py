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
