"""The Keras module in use: Keras 3, or tf_keras when TensorFlow would pick it.

TensorFlow routes ``tf.keras`` to tf_keras when the environment variable
``TF_USE_LEGACY_KERAS`` is ``"1"``, ``"true"`` or ``"True"`` at import time; we
choose the same way, so that objects from ``keras_mbv3`` and from ``tf.keras``
mix. Every other module imports Keras from here, never ``keras`` or ``tf.keras``.
A leaf: it imports nothing of the package (``keras_mbv3.keras`` registers the
layers for loading, see ``keras_mbv3/__init__.py``).
"""

import importlib
import os

LEGACY_KERAS_ENV = "TF_USE_LEGACY_KERAS"


def uses_legacy_keras():
    """Whether TensorFlow would route ``tf.keras`` to tf_keras (Keras 2)."""
    return os.environ.get(LEGACY_KERAS_ENV) in ("true", "True", "1")


IS_KERAS_3 = not uses_legacy_keras()
keras = importlib.import_module("keras" if IS_KERAS_3 else "tf_keras")
FLAVOUR = "keras3" if IS_KERAS_3 else "tf_keras"


def register(cls):
    """Register ``cls`` for serialization as ``keras_mbv3>ClassName``."""
    return keras.saving.register_keras_serializable(package="keras_mbv3")(cls)


def to_numpy(value):
    """``value`` (a tensor of any backend, or array-like) as a numpy array.

    ``np.asarray`` refuses a PyTorch tensor that carries a gradient (a model's output on the torch backend):
    Keras 3's ``ops.convert_to_numpy`` detaches it first.
    """
    if IS_KERAS_3:
        return keras.ops.convert_to_numpy(value)
    import numpy as np

    return np.asarray(value)
