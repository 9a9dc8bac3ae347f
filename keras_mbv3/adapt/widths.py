"""The widths NetAdapt may cut, and a model rebuilt at new widths with its weights sliced.

A cuttable width is a channel space (``channels``) that some layer's constructor
argument sets: a plain conv's ``filters``, a bneck's ``expanded_filters`` (its
expansion) or ``filters`` (its output; every bneck of a residual chain shares it).
Spaces that follow from others (a squeeze-excite's squeeze width, from the
expansion it reads) are re-derived by the layers themselves when the model is rebuilt.
"""

from keras_mbv3.adapt import channels
from keras_mbv3.backend import keras
from keras_mbv3.layers import InvertedResidual


def _settable(model):
    """``{leaf layer name: (top-level layer name, argument)}`` of the writers whose width a constructor sets:
    a plain ``Conv2D``'s ``filters``, and what a block declares (``width_arguments``)."""
    found = {}
    for layer in model.layers:
        if type(layer) is keras.layers.Conv2D:  # not its subclasses (tf_keras' DepthwiseConv2D is one)
            found[layer.name] = (layer.name, "filters")
        elif isinstance(layer, InvertedResidual):
            found.update({part.name: (layer.name, argument) for part, argument in layer.width_arguments().items()})
    return found


def cuttable(model, found=None):
    """``{space: [(layer name, argument), ...]}``: the spaces a cut may shrink and the arguments that set them."""
    found = found or channels.spaces(model)
    settable = _settable(model)
    result = {}
    for space, writers in found.writers.items():
        setters = [settable[w] for w in writers if w in settable]
        if setters and space not in found.fixed:
            result[space] = setters
    return result


def widths(model):
    """``{space: channels}`` of the cuttable spaces of ``model``."""
    found = channels.spaces(model)
    return {space: found.sizes[space] for space in cuttable(model, found)}


def describe(setters):
    """A short name of a cuttable space: ``expanded_conv_4 expansion`` or ``expanded_conv_3-5 output``."""
    names = sorted({name for name, _ in setters}, key=_natural)
    if len(setters) == 1 and setters[0][1] == "expanded_filters":
        return f"{names[0]} expansion"
    if len(names) == 1:
        return f"{names[0]} output"
    tail = names[-1].rsplit("_", 1)[-1]
    return (
        f"{names[0]}..{tail} output" if tail.isdigit() else f"{' + '.join(names)} output"
    )  # Large: conv + expanded_conv


def _natural(name):
    head, _, tail = name.rpartition("_")
    return (head, int(tail)) if tail.isdigit() else (name, -1)


def _plain_stride_1_blocks(model, found):
    """``[(input space, output space)]`` of the stride-1 bnecks without a residual add (their widths differ)."""
    pairs = []
    for layer in model.layers:
        if isinstance(layer, InvertedResidual) and layer.strides == 1 and layer.add is None:
            first = layer.expand or layer.depthwise
            pairs.append((found.of_axes[first.name][0][2], found.of_axes[layer.project.name][0][3]))
    return pairs


def joins_a_residual(model, new_widths, found=None):
    """Whether ``new_widths`` would give a stride-1 bneck without a residual add equal input and output widths:
    rebuilt, it would add its input (a new, untrained skip; Small's ``expanded_conv_6`` reads 40 channels and
    writes 48, so its chain may not be cut to 40 while the chain before it is 40)."""
    found = found or channels.spaces(model)

    def size(space):
        return new_widths.get(space, found.sizes[space])

    return any(size(space_in) == size(space_out) for space_in, space_out in _plain_stride_1_blocks(model, found))


def changes(model, new_widths, setters=None):
    """``{layer name: {argument: value}}``: the constructor arguments that give ``model`` ``new_widths``."""
    setters = setters or cuttable(model)
    found = {}
    for space, width in new_widths.items():
        if space not in setters:
            raise ValueError(f"Invalid `new_widths`: {space!r} is not a cuttable width of the model; allowed: "
                             f"{sorted(setters)}")  # fmt: skip
        for name, argument in setters[space]:
            found.setdefault(name, {})[argument] = int(width)
    return found


def rebuild(model, new_widths, transfer_weights=True, setters=None, found=None):
    """A new model of ``model``'s layers with ``new_widths`` (``{space: channels}``, each at most the current width),
    the kept channels those of highest L1 norm (``channels.transfer``; random weights without ``transfer_weights``).
    ``setters`` and ``found``: ``cuttable(model)`` and ``channels.spaces(model)`` of this very model, if already
    known (each reading flattens the model: 0.7 s for Small on tf_keras)."""
    config = model.get_config()
    layers = {entry["config"]["name"]: entry["config"] for entry in config["layers"]}
    for entry in config["layers"]:
        entry.pop("build_config", None)  # Keras 3 would build each layer on its old input shape
    for name, arguments in changes(model, new_widths, setters or cuttable(model, found)).items():
        layers[name].update(arguments)
    adapted = keras.Model.from_config(config)
    if transfer_weights:
        channels.transfer(model, adapted, found)
    return adapted
