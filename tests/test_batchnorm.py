"""Precise BatchNormalization statistics (issue 15): exact population statistics, weights untouched."""

import numpy as np
import pytest
import tensorflow as tf

from keras_mbv3.backend import keras
from keras_mbv3.batchnorm import batchnorm_layers, precise_batchnorm
from keras_mbv3.layers import InvertedResidual


def small_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.BatchNormalization(momentum=0.99, name="input_bn")(inputs)
    x = InvertedResidual(8, expanded_filters=16, se_ratio=0.25, activation="hard_swish", name="block")(x)
    return keras.Model(inputs, x)


@pytest.fixture
def images(rng):
    return (rng.normal(3.0, 2.0, (100, 8, 8, 3)) * np.array([1.0, 0.5, 4.0])).astype("float32")


def test_statistics_are_those_of_all_images_not_of_the_last_batch(images):
    model = small_model()
    weights = [w.copy() for layer in model.layers for w in layer.get_weights()]
    assert precise_batchnorm(model, images, batch_size=32) == 100  # batches of 32, 32, 32 and 4
    first = model.get_layer("input_bn")
    np.testing.assert_allclose(first.moving_mean.numpy(), images.mean(axis=(0, 1, 2)), rtol=1e-5)
    # tf_keras' fused BN reports the unbiased variance of each batch (n / (n - 1), n = 32 * 8 * 8 values): 6e-4 more.
    np.testing.assert_allclose(first.moving_variance.numpy(), images.var(axis=(0, 1, 2)), rtol=1e-3)
    assert first.momentum == 0.99  # restored
    nested = [layer for layer in batchnorm_layers(model) if layer is not first]
    assert len(nested) == 3 and all(np.all(layer.moving_mean.numpy() != 0) for layer in nested)
    trained = [w for w in weights if w.ndim > 1]  # kernels
    now = [w for layer in model.layers for w in layer.get_weights() if w.ndim > 1]
    assert all(np.array_equal(a, b) for a, b in zip(trained, now))


def test_a_dataset_of_image_label_batches_gives_the_same_statistics(images):
    """Same batches, same statistics (deeper BNs see batch-normalized inputs, so batches matter to them)."""
    from_array, from_dataset = small_model(), small_model()
    from_dataset.set_weights(from_array.get_weights())
    precise_batchnorm(from_array, images, batch_size=25)
    labelled = tf.data.Dataset.from_tensor_slices((images, np.zeros(len(images)))).batch(25)
    assert precise_batchnorm(from_dataset, labelled) == 100
    for a, b in zip(batchnorm_layers(from_array), batchnorm_layers(from_dataset)):
        np.testing.assert_allclose(a.moving_mean.numpy(), b.moving_mean.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(a.moving_variance.numpy(), b.moving_variance.numpy(), rtol=1e-3, atol=1e-5)


def test_max_images_stops_after_the_batch_that_reaches_it(images):
    model = small_model()
    assert precise_batchnorm(model, images, max_images=40, batch_size=32) == 64
    np.testing.assert_allclose(model.get_layer("input_bn").moving_mean.numpy(), images[:64].mean(axis=(0, 1, 2)),
                               rtol=1e-5)  # fmt: skip


def test_bad_arguments_name_themselves_and_leave_the_statistics(images):
    model = small_model()
    before = [layer.moving_mean.numpy().copy() for layer in batchnorm_layers(model)]
    with pytest.raises(ValueError, match="max_images"):
        precise_batchnorm(model, images, max_images=0)
    with pytest.raises(ValueError, match="images"):
        precise_batchnorm(model, images[:0])
    assert all(np.array_equal(a, layer.moving_mean.numpy()) for a, layer in zip(before, batchnorm_layers(model)))
    assert precise_batchnorm(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]), np.ones((3, 4))) == 0


def test_batches_of_other_image_sizes_each_count(images):
    """A model of any input size: the traced forward pass takes each image size (one trace each)."""
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(inputs))
    batches = [images[:40], images[40:, :6, :6]]  # 40 images of 8x8, 60 of 6x6
    assert precise_batchnorm(model, batches) == 100
    means = [batch.mean(axis=(0, 1, 2)) for batch in batches]  # each image weighs the same, whatever its size
    np.testing.assert_allclose(model.get_layer("bn").moving_mean.numpy(), (40 * means[0] + 60 * means[1]) / 100,
                               rtol=1e-5)  # fmt: skip
