"""MobileNetV3 for Keras: layers, applications and int8 QAT recipes.

``keras_mbv3.keras`` is the Keras module in use (Keras 3, or tf_keras when
``TF_USE_LEGACY_KERAS=1``), so user code can mix compatible objects::

    from keras_mbv3 import keras
    from keras_mbv3.layers import InvertedResidual
"""

from keras_mbv3.backend import FLAVOUR, IS_KERAS_3, keras

__version__ = "0.1.0"
__all__ = ["keras", "IS_KERAS_3", "FLAVOUR", "__version__"]
