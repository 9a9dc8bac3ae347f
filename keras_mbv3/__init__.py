"""MobileNetV3 for Keras: layers, applications and int8 QAT recipes.

``keras_mbv3.keras`` is the Keras module in use (Keras 3, or tf_keras when
``TF_USE_LEGACY_KERAS=1``), so user code can mix compatible objects::

    from keras_mbv3 import keras
    from keras_mbv3.layers import InvertedResidual

The Keras line is chosen on first use, not on ``import keras_mbv3``, so that the
``mbv3`` command line can choose it before TensorFlow loads.
"""

__version__ = "0.1.0"
__all__ = ["keras", "IS_KERAS_3", "FLAVOUR", "__version__"]


def __getattr__(name):
    if name in ("keras", "IS_KERAS_3", "FLAVOUR"):
        from keras_mbv3 import backend, layers, optimizers  # noqa: F401  (registered, so saved models load)

        return getattr(backend, name)
    raise AttributeError(f"module 'keras_mbv3' has no attribute {name!r}")
