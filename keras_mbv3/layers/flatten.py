"""Flatten composite layers of a functional model into their sub-layers."""

from keras_mbv3 import graph
from keras_mbv3.layers.composite import _flattening


def flatten_model(model):
    """A functional model computing ``model`` with every composite layer replaced by its sub-layers.

    The new model shares the layer objects (and so the weights) of ``model`` and
    gives the same outputs; its graph holds only non-composite layers, which is
    what quantization and intermediate feature taps need.

    Args:
        model: a functional model (such as any ``keras_mbv3.applications`` model).

    Returns:
        A new functional model with the same inputs, outputs and name.
    """
    with _flattening():  # a composite layer called now calls its sub-layers on the new tensors
        return graph.Graph(model).rebuild()
