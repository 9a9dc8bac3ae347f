"""Create a compiled model's training state before ``fit``, so that its train step is traced once, not twice.

A ``tf.function`` that creates variables on its first call is traced a second
time (tensorflow/tensorflow#48851). Keras 3 on TensorFlow, without a
distribution strategy, leaves the optimizer's slots and the compiled metrics to
the first trace of the train step (``TensorFlowTrainer._maybe_symbolic_build``:
"maximizes backwards compatibility"), and tf_keras its metrics: the first
``fit`` of every model traced its whole train step twice. MobileNetV3Small at
32 px, one epoch of 2 batches, AdamW with warm-up and cosine decay and an
accuracy metric: Keras 3 27.1 s before, 16.2 s after (+0.7 s here); tf_keras
8.7 s before, 6.6 s after (+0.7 s). tf_keras does the same under a distribution
strategy, where the state is built in its scope and replica context: the CLI's
train and QAT on two local MultiWorkerMirroredStrategy workers (36 images),
161 s before, 116 s after. JAX builds all of it before tracing.
"""

import numpy as np

from keras_mbv3.backend import IS_KERAS_3, keras


def _zeros_like_batch(data):
    """``(x, y)``: one example of zeros shaped as ``data``'s batches (a ``tf.data.Dataset``, or an ``(x, y[, w])``
    tuple of arrays or nested arrays); None without targets, or if a dataset's shapes are not all known."""
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset):
        specs = data.element_spec
        if not isinstance(specs, (tuple, list)) or len(specs) < 2:  # no targets: nothing to build a loss from
            return None
        shapes = [spec.shape[1:] for spec in tf.nest.flatten(specs)]
        if not all(shape.is_fully_defined() for shape in shapes):
            return None
        batch = tf.nest.map_structure(lambda spec: tf.zeros([1, *spec.shape[1:]], spec.dtype), specs)
    else:
        if not isinstance(data, (tuple, list)) or len(data) < 2:
            return None
        batch = tf.nest.map_structure(lambda array: tf.zeros_like(np.asarray(array)[:1]), tuple(data))
    return batch[0], batch[1]


def traced_without_strategy(model):
    """Whether ``model`` runs on TensorFlow outside any distribution strategy: where a ``tf.function`` of it is
    traced as written (under a strategy, tf_keras' BatchNormalization statistics and metrics are SyncOnRead)."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    default = tf.distribute.get_strategy()
    return not tf.distribute.has_strategy() and getattr(model, "distribute_strategy", default) is default


def build_fit_state(model, data):
    """Create the loss, metric and optimizer variables of the compiled ``model``, as its first train step would.

    Under a tf_keras distribution strategy they are created in its scope and replica context, where ``fit`` would
    make them (MirroredStrategy on 2 logical CPUs: the train step was traced twice per replica, now once).

    Args:
        model: a compiled Keras model (Keras 3 or tf_keras).
        data: what ``fit`` will take: a ``tf.data.Dataset`` of ``(x, y)``
            batches, or a tuple ``(x, y)`` of arrays. Only its shapes and dtypes are
            read: one example of zeros goes through the model in inference mode.

    Returns:
        Whether the state was built: not on another backend than TensorFlow (it
        builds it itself), under a Keras 3 distribution strategy (Keras 3 builds
        it itself there), with ``run_eagerly`` (nothing is traced) or for a
        dataset of unknown shapes.
    """
    if keras.backend.backend() != "tensorflow" or model.run_eagerly or model.optimizer is None:
        return False
    if IS_KERAS_3 and not traced_without_strategy(model):
        return False
    batch = _zeros_like_batch(data)
    if batch is None:
        return False
    x, y = batch

    def losses_and_metrics():
        predicted = model(x, training=False)
        if IS_KERAS_3:
            model.compute_loss(x, y, predicted, training=False)
        else:
            model.compute_loss(x, y, predicted)
        model.compute_metrics(x, y, predicted, None)

    strategy = model.distribute_strategy
    with strategy.scope():
        strategy.run(losses_and_metrics)  # the default strategy calls it; a tf_keras one in each replica's context
        model.reset_metrics()
        # tf_keras builds it in an init scope of the trace, which still counts as the first call's variables
        if not getattr(model.optimizer, "built", getattr(model.optimizer, "_built", False)):
            model.optimizer.build(model.trainable_variables)
    return True
