"""One reader of functional Keras graphs, the same on Keras 3 and tf_keras.

Keras keeps a functional model's graph in private node attributes whose
names differ between the lines (``node.operation`` / ``node.layer``,
``node.arguments`` / ``node.call_args``, ``history.operation`` /
``history.layer``). This module is the only one that reads them; everything
else (flattening, the int8 form, feature taps, calibration) walks ``Graph``.
"""

import dataclasses

import tensorflow as tf

from keras_mbv3 import checks
from keras_mbv3.backend import IS_KERAS_3, keras


@dataclasses.dataclass(frozen=True, eq=False)
class Node:
    """One call of a layer in a functional graph.

    ``args`` and ``kwargs`` are the call's arguments as given (Keras tensors in
    their nesting); ``inputs`` the Keras tensors among them and ``outputs`` the
    tensors it made, both flat. ``is_input`` marks an ``Input`` layer's node.
    """

    layer: object
    args: tuple
    kwargs: dict
    inputs: tuple
    outputs: tuple
    is_input: bool


def _node(raw):
    if IS_KERAS_3:
        layer, args, kwargs = raw.operation, raw.arguments.args, raw.arguments.kwargs
    else:
        layer, args, kwargs = raw.layer, tuple(raw.call_args), raw.call_kwargs
    inputs = tuple(t for t in tf.nest.flatten((args, kwargs)) if is_keras_tensor(t))
    return Node(layer, tuple(args), dict(kwargs), inputs, tuple(tf.nest.flatten(raw.outputs)), bool(raw.is_input))


def is_keras_tensor(value):
    """Whether ``value`` is a symbolic tensor of a functional graph (either line)."""
    return hasattr(value, "_keras_history")


def is_functional(model):
    """Whether ``model`` is a functional model (``keras.Model(inputs, outputs)``) with a graph to read."""
    if not isinstance(model, keras.Model) or not hasattr(model, "_nodes_by_depth"):
        return False
    if IS_KERAS_3:
        return not isinstance(model, keras.Sequential)
    return bool(getattr(model, "_is_graph_network", False))


def input_name(tensor):
    """The name of the ``Input`` layer that made the model input ``tensor``."""
    history = tensor._keras_history
    return (history.operation if IS_KERAS_3 else history.layer).name


class Graph:
    """The nodes of a functional ``model`` in topological order, with producers and consumers of each tensor.

    Tensors are told apart by identity: ``producer(t)`` and ``consumers(t)``
    take a tensor of this graph (a model input, a node's output).
    """

    def __init__(self, model):
        if not is_functional(model):
            raise TypeError(
                f"Invalid `model`: received {type(model).__name__}; allowed: a functional Keras model "
                "(keras.Model(inputs, outputs); Sequential and subclassed models have no graph to read)."
            )
        self.model = model
        by_depth = model._nodes_by_depth
        self.nodes = [_node(raw) for depth in sorted(by_depth, reverse=True) for raw in by_depth[depth]]
        self.inputs = list(model.inputs)
        self.outputs = tf.nest.flatten(model.outputs)
        self._producers = {id(t): node for node in self.nodes for t in node.outputs}
        self._consumers = {}
        for node in self.nodes:
            for tensor in node.inputs:
                self._consumers.setdefault(id(tensor), []).append(node)

    def producer(self, tensor):
        """The node that made ``tensor``."""
        return self._producers[id(tensor)]

    def consumers(self, tensor):
        """The nodes that read ``tensor`` (a node reading it twice is listed twice)."""
        return self._consumers.get(id(tensor), [])

    def is_output(self, tensor):
        return any(tensor is t for t in self.outputs)

    def layer_outputs(self):
        """``{layer name: output tensor}`` (a list for several outputs; the last call of a shared layer)."""
        found = {}
        for node in self.nodes:
            found[node.layer.name] = node.outputs[0] if len(node.outputs) == 1 else list(node.outputs)
        return found

    def output_structure(self):
        """The model's outputs as it returns them (a tensor, a list or a dict)."""
        model = self.model
        return model._outputs_struct if IS_KERAS_3 else model._nested_outputs

    def rebuild(self, call_node=None, on_input=None, name=None):
        """A new functional model of this graph: new ``Input`` layers (same names and shapes), every node called again.

        ``call_node(node, args, kwargs)``, if given, returns a node's new outputs
        from its arguments mapped to the new tensors (default: call the node's
        layer on them); ``on_input(node, tensor)``, if given, what the new input
        ``tensor`` of an ``Input`` node becomes for the nodes that read it.
        Layers called again share their weights.
        """
        new, new_inputs = {}, {}
        for node in self.nodes:
            if node.is_input:
                (tensor,) = node.outputs
                new_input = keras.Input(
                    shape=tensor.shape[1:], batch_size=tensor.shape[0], dtype=tensor.dtype, name=node.layer.name
                )
                new_inputs[id(tensor)] = new_input
                new[id(tensor)] = on_input(node, new_input) if on_input else new_input
        outputs = self._replay(new, call_node)
        inputs = [new_inputs[id(t)] for t in self.inputs]
        return keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs, name=name or self.model.name)

    def replay(self, inputs, call_node=None):
        """Call every node again on ``inputs`` (tensors for the model's inputs, in order); return the new outputs.

        What a call of the model on ``inputs`` computes, with its layers as nodes
        of the caller's graph instead of one nested model (``call_node`` as in
        ``rebuild``). The outputs come in the model's output structure.
        """
        return self._replay({id(old): tensor for old, tensor in zip(self.inputs, inputs)}, call_node)

    def _replay(self, new, call_node):
        for node in self.nodes:
            if node.is_input:
                continue
            args, kwargs = tf.nest.map_structure(lambda t: new.get(id(t), t), (node.args, node.kwargs))
            outputs = call_node(node, args, kwargs) if call_node else node.layer(*args, **kwargs)
            for old, tensor in zip(node.outputs, tf.nest.flatten(outputs)):
                new[id(old)] = tensor
        return tf.nest.map_structure(lambda t: new[id(t)], self.output_structure())

    def input_layers(self, layer):
        """The layers whose outputs feed ``layer`` in this graph (over all its calls)."""
        found = []
        for node in self.nodes:
            if node.layer is layer:
                found.extend(self.producer(t).layer for t in node.inputs)
        return found


def functional(model):
    """``model`` itself when functional; a ``Sequential`` as the functional model of its layers."""
    if isinstance(model, keras.Sequential) and not is_functional(model):
        if not model.built or not model.inputs:
            checks.fail("model", f"Sequential model {model.name!r} without an input shape",
                        "a Sequential model built on an input shape (keras.Input first)", TypeError)  # fmt: skip
        inputs = keras.Input(batch_shape=tuple(model.inputs[0].shape), dtype=model.inputs[0].dtype)
        x = inputs
        for layer in model.layers:
            x = layer(x)
        return keras.Model(inputs, x, name=model.name)
    return model


def _inline_call(layer, args, kwargs):
    """Call ``layer``; a nested model's layers become nodes of the caller's graph (recursively)."""
    if isinstance(layer, keras.Model):
        model = functional(layer)
        if is_functional(model):
            tensors = [t for t in tf.nest.flatten((args, kwargs)) if is_keras_tensor(t)]
            return Graph(model).replay(tensors, _inline_node)
    return layer(*args, **kwargs)


def _inline_node(node, args, kwargs):
    return _inline_call(node.layer, args, kwargs)


def inline_models(model):
    """``model`` (functional or ``Sequential``) as one graph: nested models' layers become its nodes (recursively).

    Composite layers stay whole unless a flattening scope is active. Layers are
    shared with ``model``, so the weights are too.
    """
    return Graph(functional(model)).rebuild(_inline_node)


def only_feeds_a_concat(graph, tensor):
    """Whether ``tensor`` of ``graph`` is read only by a Concatenate, through reshapes (and is not a model output).

    Such a tensor needs no int8 range of its own: the converter gives each
    input of a concat the concat's scale when it has none, while with ranges
    of their own (SSDLite's twelve heads) it requantized each input before the
    concat (12 QUANTIZE ops in the int8 graph). quantize(concat(x)) ==
    concat(quantize(x)) for one scale, so QAT computes the same. Both QAT
    engines quantize by this rule.
    """
    readers = graph.consumers(tensor)
    if len(readers) != 1 or graph.is_output(tensor):
        return False
    layer = readers[0].layer
    if isinstance(layer, keras.layers.Concatenate):
        return True
    return isinstance(layer, keras.layers.Reshape) and only_feeds_a_concat(graph, readers[0].outputs[0])


def layer_outputs(model):
    """``{layer name: output tensor}`` of every layer of a functional ``model``."""
    return Graph(model).layer_outputs()
