"""Base class of layers made only of sub-layers.

A composite layer creates its sub-layers in ``build`` (their sizes depend on the
input channels and, for stride-2 padding, on the input size), names them
``{name}_{part}`` and calls nothing but them in ``call``. That is what lets
``keras_mbv3.quantization`` flatten a model: calling ``layer.call`` on symbolic
tensors records the sub-layers as nodes of the outer functional graph.
"""

import contextlib
import contextvars

from keras_mbv3.backend import keras
from keras_mbv3.ops import name_scope


def part(layer, suffix):
    """Keyword arguments for a sub-layer of ``layer``: the name ``{name}_{suffix}`` and its dtype policy."""
    return {"name": f"{layer.name}_{suffix}", "dtype": layer.dtype_policy.name}


class CompositeLayer(keras.layers.Layer):
    """A layer whose ``call`` only calls sub-layers created in ``build``."""

    def __call__(self, *args, **kwargs):
        if _FLATTENING.get():
            # Inside flatten_model: run the sub-layers on the symbolic inputs so
            # that they, not this layer, become nodes of the new graph.
            return self.call(*args)
        return super().__call__(*args, **kwargs)

    def _part(self, suffix):
        return part(self, suffix)

    @staticmethod
    def _build_part(layer, input_shape):
        """Build ``layer`` on ``input_shape`` and return its output shape."""
        with name_scope(layer.name):
            layer.build(input_shape)
        return layer.compute_output_shape(input_shape)

    def _build_chain(self, layers, input_shape):
        """Build ``layers`` one after the other; return the last output shape."""
        shape = input_shape
        for layer in layers:
            shape = self._build_part(layer, shape)
        return shape


# True inside ``flatten_model`` only. A context variable, not a class attribute: a
# model built in another thread (or task) meanwhile builds normally.
_FLATTENING = contextvars.ContextVar("keras_mbv3_flattening", default=False)


@contextlib.contextmanager
def _flattening():
    token = _FLATTENING.set(True)
    try:
        yield
    finally:
        _FLATTENING.reset(token)


def sublayers(layer):
    """All layers nested in ``layer`` (recursively, not ``layer`` itself), in both Keras lines."""
    return list(layer._flatten_layers(include_self=False, recursive=True))


def weighted_leaf_layers(layer):
    """``{name: layer}`` of the nested layers that hold weights and have no sub-layers."""
    return {sub.name: sub for sub in sublayers(layer) if sub.weights and not sublayers(sub)}
