"""Channel spaces: the weight axes of a model that index the same channels, so that a cut slices them together.

A space starts at a conv (or dense) layer's output and runs through every layer
that keeps channels (BN, depthwise convs, activations, padding, pooling); the
inputs of an ``Add`` or ``Multiply`` are one space (a residual chain, or the SE
gate and the features it scales). A space that reaches a model input or output
is fixed (the image's 3 channels, the logits). Read on the flattened model, so
a composite layer's sub-layers are seen one by one.
"""

import dataclasses

import numpy as np

from keras_mbv3 import graph
from keras_mbv3.backend import keras
from keras_mbv3.layers.flatten import flatten_model

_WRITERS = (keras.layers.Conv2D, keras.layers.Dense)  # out channels: a new space (DepthwiseConv2D is not one)
_MERGERS = (keras.layers.Add, keras.layers.Multiply)


@dataclasses.dataclass
class Spaces:
    """The channel spaces of a flattened model.

    ``of_axes[layer name]`` lists, per weight of the layer, the space of each axis
    (None for an axis that does not index channels); ``writers[space]`` the conv
    and dense layers whose outputs are the space; ``sizes[space]`` its channel
    count; ``fixed`` the spaces that reach a model input or output.
    """

    of_axes: dict
    writers: dict
    sizes: dict
    fixed: set


class _Union:
    def __init__(self):
        self.parent = {}

    def find(self, key):
        self.parent.setdefault(key, key)
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def join(self, keys):
        roots = sorted({self.find(k) for k in keys})
        for root in roots[1:]:
            self.parent[root] = roots[0]
        return roots[0]


def spaces(model):
    """The ``Spaces`` of a functional ``model`` (composite layers are read through their sub-layers).

    Raises:
        ValueError: naming a layer whose channels this analysis cannot follow (one that
            mixes channels without weights, such as a Concatenate or a Reshape of channels).
    """
    flat = graph.Graph(flatten_model(model))
    union, tensor_space, inputs_of = _Union(), {}, {}
    fixed = set()
    for node in flat.nodes:
        name = node.layer.name
        if node.is_input:
            position = next(i for i, t in enumerate(flat.inputs) if t is node.outputs[0])
            tensor_space[id(node.outputs[0])] = f"input:{position}"  # input names differ from model to model
            fixed.add(f"input:{position}")
            continue
        ins = [tensor_space[id(t)] for t in node.inputs]
        inputs_of[name] = ins
        if _is_writer(node.layer):
            out = name
        elif isinstance(node.layer, _MERGERS):
            out = union.join(ins)
        elif len(ins) == 1 and node.outputs[0].shape[-1] == node.inputs[0].shape[-1]:
            out = ins[0]
        else:
            raise ValueError(
                f"Invalid `model`: layer {name!r} ({type(node.layer).__name__}) mixes or reshapes channels without "
                "weights; allowed: models whose channels are changed only by convs and dense layers (a MobileNetV3 "
                "classifier, or a model of the same kinds of layers)"
            )
        for tensor in node.outputs:
            tensor_space[id(tensor)] = out
    for tensor in flat.outputs:
        fixed.add(tensor_space[id(tensor)])
    find = union.find
    of_axes, writers, sizes = {}, {}, {}
    for node in flat.nodes:
        if node.is_input:
            continue
        layer, name = node.layer, node.layer.name
        space_in, space_out = find(inputs_of[name][0]), find(tensor_space[id(node.outputs[0])])
        sizes.setdefault(space_out, int(node.outputs[0].shape[-1]))
        if not layer.weights:
            continue
        if _is_writer(layer):
            writers.setdefault(space_out, []).append(name)
        of_axes[name] = [_axes(layer, weight, space_in, space_out) for weight in layer.weights]
    return Spaces(of_axes, writers, sizes, {find(s) for s in fixed})


def _is_writer(layer):
    return isinstance(layer, _WRITERS) and not isinstance(layer, keras.layers.DepthwiseConv2D)  # tf_keras: a Conv2D


def _axes(layer, weight, space_in, space_out):
    rank = len(weight.shape)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return [space_in if axis == 2 else None for axis in range(rank)] if rank == 4 else [space_in]
    if isinstance(layer, _WRITERS):
        if rank == 1:
            return [space_out]
        return [None] * (rank - 2) + [space_in, space_out]
    if isinstance(layer, keras.layers.BatchNormalization):
        return [space_in]
    raise ValueError(
        f"Invalid `model`: layer {layer.name!r} ({type(layer).__name__}) holds weights this analysis does not "
        "know how to slice; allowed: Conv2D, DepthwiseConv2D, Dense and BatchNormalization"
    )


def importance(model, found):
    """``{space: (channels,)}``: each channel's L1 norm in the kernels that write it, each writer's norms
    divided by their mean (so that writers of different sizes weigh alike), summed over the writers."""
    layers = {layer.name: layer for layer in _leaves(model)}
    scores = {}
    for space, names in found.writers.items():
        total = np.zeros(found.sizes[space])
        for name in names:
            kernel = np.abs(np.asarray(layers[name].weights[0]))
            norms = kernel.reshape(-1, kernel.shape[-1]).sum(0)
            total += norms / max(norms.mean(), 1e-12)
        scores[space] = total
    return scores


def keep(scores, size):
    """The ``size`` channels of highest score, in their original order."""
    return np.sort(np.argsort(-scores, kind="stable")[:size])


def transfer(source, target, before=None):
    """Copy ``source``'s weights into ``target``, a model of the same layers with fewer channels in some spaces
    (``before``: ``spaces(source)`` of this very source, if already known).

    Each space that shrank keeps its channels of highest L1 norm (``importance``);
    every weight axis of that space is sliced with the same indices.

    Returns:
        ``{space: kept channel indices}`` of the spaces that shrank.
    """
    before, after = before or spaces(source), spaces(target)
    if set(after.sizes) != set(before.sizes):
        raise ValueError(f"Invalid `target`: its channel spaces are not the source's (new or joined: "
                         f"{sorted(set(after.sizes) ^ set(before.sizes))}), e.g. a residual add appeared")  # fmt: skip
    scores = importance(source, before)
    kept = {}
    for space, size in after.sizes.items():
        if before.sizes.get(space) is None:
            raise ValueError(f"Invalid `target`: its channel space {space!r} is not one of the source's")
        if size > before.sizes[space]:
            raise ValueError(f"Invalid `target`: space {space!r} has {size} channels, more than the source's "
                             f"{before.sizes[space]}")  # fmt: skip
        if size < before.sizes[space]:
            kept[space] = keep(scores.get(space, np.zeros(before.sizes[space])), size)
    sources = {layer.name: layer for layer in _leaves(source)}
    for layer in _leaves(target):
        if not layer.weights:
            continue
        values = []
        for weight, axes in zip(sources[layer.name].get_weights(), before.of_axes[layer.name]):
            for axis, space in enumerate(axes):
                if space in kept:
                    weight = np.take(weight, kept[space], axis=axis)
            values.append(weight)
        layer.set_weights(values)
    return kept


def _leaves(model):
    from keras_mbv3.layers.composite import sublayers

    return [layer for layer in sublayers(model) if not sublayers(layer)]
