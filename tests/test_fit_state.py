"""build_fit_state: the train step traced once, the same training as without it."""

import numpy as np
import pytest
import tensorflow as tf

from keras_mbv3.backend import IS_KERAS_3, keras
from keras_mbv3.fit_state import build_fit_state


def small_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    model.compile(keras.optimizers.AdamW(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])  # fmt: skip
    return model


def traces_of_one_fit(model, data, **fit_args):
    """How many times ``fit`` traced the train step, and its history."""
    traced = []
    train_step = model.train_step
    model.train_step = lambda batch: traced.append(1) or train_step(batch)
    history = model.fit(*data, epochs=2, verbose=0, **fit_args).history
    return len(traced), history


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, (16, 6, 6, 3)).astype("float32"), rng.integers(0, 3, 16)


def test_the_train_step_is_traced_once_and_trains_as_without(arrays):
    before, unbuilt = traces_of_one_fit(small_model(), arrays, batch_size=8, shuffle=False)
    model = small_model()
    assert build_fit_state(model, arrays)
    after, built = traces_of_one_fit(model, arrays, batch_size=8, shuffle=False)
    assert (before, after) == (2, 1)  # tensorflow/tensorflow#48851: variables made in the first trace
    for name in ("loss", "accuracy"):  # the zeros built the metrics and left nothing in them
        np.testing.assert_allclose(built[name], unbuilt[name], rtol=1e-5)


def test_a_dataset_of_batches_is_read_by_its_shapes(arrays):
    dataset = tf.data.Dataset.from_tensor_slices(arrays).batch(8)
    model = small_model()
    assert build_fit_state(model, dataset)
    assert traces_of_one_fit(model, (dataset,))[0] == 1


def test_nothing_to_build_eagerly_or_for_unknown_shapes(arrays):
    model = small_model()
    model.compile("adam", "mse", run_eagerly=True)
    assert not build_fit_state(model, arrays)
    ragged = tf.data.Dataset.from_generator(lambda: iter([]), output_signature=(
        tf.TensorSpec((None, None, None, 3)), tf.TensorSpec((None,), tf.int64)))  # fmt: skip
    assert not build_fit_state(small_model(), ragged)
    assert not build_fit_state(small_model(), tf.data.Dataset.from_tensor_slices(arrays[0]).batch(8))  # no targets


def test_under_a_distribution_strategy_the_train_step_is_traced_once_and_trains_as_without(arrays):
    """tf_keras made the metric and optimizer variables in the first trace under a strategy too (Keras 3 builds
    them before tracing there): build_fit_state makes them in the strategy's scope and replica context."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        unbuilt_model, model = small_model(), small_model()
    before, unbuilt = traces_of_one_fit(unbuilt_model, arrays, batch_size=8, shuffle=False)
    assert build_fit_state(model, arrays) == (not IS_KERAS_3)  # Keras 3 builds it itself under a strategy
    after, built = traces_of_one_fit(model, arrays, batch_size=8, shuffle=False)
    assert (before, after) == ((1, 1) if IS_KERAS_3 else (2, 1))
    for name in ("loss", "accuracy"):
        np.testing.assert_allclose(built[name], unbuilt[name], rtol=1e-5)
