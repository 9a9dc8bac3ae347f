"""keras_mbv3.traced_gradients: a fitted model's train graph is freed once its gradient closures are released."""

import gc
import weakref

import numpy as np

from keras_mbv3.backend import keras
from keras_mbv3.traced_gradients import release_traced_gradients


def test_a_fitted_models_traced_graph_is_freed_after_the_release():
    """Before the release, TensorFlow's gradient registry keeps the train graph alive after the model is gone."""
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile("sgd", "mse")
    model.fit(np.zeros((8, 4), "float32"), np.zeros((8, 2), "float32"), verbose=0)
    graphs = [weakref.ref(g) for g in gc.get_objects() if type(g).__name__ == "FuncGraph"]
    del model
    gc.collect()
    kept = sum(ref() is not None for ref in graphs)
    released = release_traced_gradients()
    gc.collect()
    assert released >= 1 and sum(ref() is not None for ref in graphs) < kept
    assert release_traced_gradients() == 0  # nothing left to release
