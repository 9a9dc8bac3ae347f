"""Reference models of keras.applications with random weights, in the official layout."""

import numpy as np
import tf_keras

from keras_mbv3.layers.composite import sublayers


def random_reference(name, seed=0, **kwargs):
    """A tf_keras.applications model (the tf.keras 2 layout of the official files) with random BN statistics."""
    rng = np.random.default_rng(seed)
    model = getattr(tf_keras.applications, name)(weights=None, **kwargs)
    for layer in [model] + sublayers(model):
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 1.5, var.shape),
            ])  # fmt: skip
    return model


def relative_error(actual, expected):
    return float(np.abs(actual - expected).max() / np.abs(expected).max())
