"""Reference models of keras.applications with random weights, in the official layout."""

import numpy as np
import tf_keras

from conftest import randomize_batchnorm


def random_reference(name, seed=0, **kwargs):
    """A tf_keras.applications model (the tf.keras 2 layout of the official files) with random BN statistics."""
    model = getattr(tf_keras.applications, name)(weights=None, **kwargs)
    randomize_batchnorm(model, seed, tf_keras.layers.BatchNormalization)
    return model


def relative_error(actual, expected):
    return float(np.abs(actual - expected).max() / np.abs(expected).max())
