"""Flatten composite layers of a functional model into their sub-layers."""

import tensorflow as tf

from keras_mbv3.backend import IS_KERAS_3, keras
from keras_mbv3.layers.composite import _flattening


def flatten_model(model):
    """A functional model computing ``model`` with every composite layer replaced by its sub-layers.

    The new model shares the layer objects (and so the weights) of ``model`` and
    gives the same outputs; its graph holds only non-composite layers, which is
    what tfmot's quantization and intermediate feature taps need.

    Args:
        model: a functional model (such as any ``keras_mbv3.applications`` model).

    Returns:
        A new functional model with the same inputs, outputs and name.
    """
    if not hasattr(model, "_nodes_by_depth"):
        raise TypeError(f"Invalid `model`: received {type(model).__name__}; allowed: a functional Keras model.")
    inputs = [
        keras.Input(shape=t.shape[1:], batch_size=t.shape[0], dtype=t.dtype, name=input_layer_name(t))
        for t in model.inputs
    ]
    with _flattening():
        outputs = model.call(inputs if len(inputs) > 1 else inputs[0])
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs, name=model.name)


def input_layer_name(tensor):
    """The name of the ``Input`` layer that made the model input ``tensor`` (either Keras line)."""
    history = tensor._keras_history
    layer = history.operation if IS_KERAS_3 else history.layer
    return layer.name


def layer_outputs(model):
    """``{layer name: output tensor}`` for every layer node of a functional ``model``'s graph."""
    outputs = {}
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            layer = node.operation if IS_KERAS_3 else node.layer
            tensors = tf.nest.flatten(node.output_tensors)
            outputs[layer.name] = tensors[0] if len(tensors) == 1 else tensors
    return outputs
