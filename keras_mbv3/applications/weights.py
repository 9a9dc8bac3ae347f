"""Weight files: the official keras.applications ImageNet weights and local files.

The official ``.h5`` files store each layer under its tf.keras 2 name, such as
``Conv/BatchNorm``, ``expanded_conv_3/depthwise`` or
``expanded_conv_3/squeeze_excite/Conv_1``. ``official_to_ours`` maps such a name to
the name of our (sub-)layer: ``/BatchNorm`` becomes ``_bn``, every other ``/``
becomes ``_``, and the result is lower-cased (``conv_bn``,
``expanded_conv_3_depthwise``, ``expanded_conv_3_squeeze_excite_conv_1``).
"""

import os
import urllib.error

import h5py
import numpy as np

from keras_mbv3 import checks
from keras_mbv3.backend import keras
from keras_mbv3.layers.composite import weighted_leaf_layers

BASE_WEIGHT_PATH = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/"
# model name: (md5 with top, md5 without top), as published by keras.applications.
WEIGHTS_HASHES = {
    "large_224_0.75_float": ("765b44a33ad4005b3ac83185abf1d0eb", "40af19a13ebea4e2ee0c676887f69a2e"),
    "large_224_1.0_float": ("59e551e166be033d707958cf9e29a6a7", "07fb09a5933dd0c8eaafa16978110389"),
    "large_minimalistic_224_1.0_float": ("675e7b876c45c57e9e63e6d90a36599c", "ec5221f64a2f6d1ef965a614bdae7973"),
    "small_224_0.75_float": ("cb65d4e5be93758266aa0a7f2c6708b7", "ebdb5cc8e0b497cd13a7c275d475c819"),
    "small_224_1.0_float": ("8768d4c2e7dee89b9d02b2d03d65d862", "d3e8ec802a04aa4fc771ee12a9a9b836"),
    "small_minimalistic_224_1.0_float": ("99cd97fb2fcdad2bf028eb838de69e37", "cde8136e733e811080d9fcd8a252f7e4"),
}  # fmt: skip
IMAGENET_ALPHAS = {False: (0.75, 1.0), True: (1.0,)}  # by minimalistic


def imagenet_file(model_type, minimalistic, alpha, include_top):
    """``(file name, md5)`` of the official weights of one configuration."""
    model_name = "{}{}_224_{}_float".format(model_type, "_minimalistic" if minimalistic else "", float(alpha))
    with_top, without_top = WEIGHTS_HASHES[model_name]
    if include_top:
        return f"weights_mobilenet_v3_{model_name}.h5", with_top
    return f"weights_mobilenet_v3_{model_name}_no_top_v2.h5", without_top


def keras_cache_dir():
    """The Keras cache, where ``keras.utils.get_file`` puts files by default."""
    return os.path.expanduser(os.environ.get("KERAS_HOME", os.path.join("~", ".keras")))


def fetch(file_name, file_hash, base_url=None, cache_dir=None):
    """Download ``base_url + file_name`` into ``cache_dir/models`` unless cached; check its md5.

    ``base_url`` defaults to ``BASE_WEIGHT_PATH`` and ``cache_dir`` to the Keras
    cache. A file whose hash is wrong is deleted and a ``ValueError`` names it;
    a failed download is a ``ConnectionError`` that names the URL.
    """
    base_url = base_url or BASE_WEIGHT_PATH
    cache_dir = cache_dir or keras_cache_dir()
    target = os.path.join(cache_dir, "models", file_name)
    # An existing, writable folder: otherwise get_file silently falls back to /tmp/.keras.
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        return keras.utils.get_file(
            file_name, base_url + file_name, file_hash=file_hash, cache_subdir="models", cache_dir=cache_dir
        )
    except ValueError as error:
        if os.path.exists(target):
            os.remove(target)
        raise ValueError(
            f"Weights file {file_name!r} from {base_url!r} does not have the published md5 "
            f"{file_hash}; the bad download was deleted. ({error})"
        ) from None
    except Exception as error:  # get_file raises a bare Exception when the download fails
        if not isinstance(error.__context__, urllib.error.URLError):
            raise
        raise ConnectionError(
            f"Could not download the weights file {base_url + file_name} ({error}). Without network, download it "
            f"elsewhere and pass its path as weights= (--weights on the command line)."
        ) from None


def official_to_ours(name):
    """Map a tf.keras 2 layer name of the official files to our layer name."""
    return name.replace("/BatchNorm", "_bn").replace("/", "_").lower()


def _decode(names):
    return [n.decode("utf8") if isinstance(n, bytes) else str(n) for n in names]


def _official_layer_names(path):
    """The layer names of a legacy-format h5 weights file, or None for another format."""
    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            if "layer_names" not in group.attrs:
                return None
            names = _decode(group.attrs["layer_names"])
    except OSError as error:
        raise ValueError(f"Cannot read weights file {path!r}: not a complete HDF5 file ({error}).") from None
    if any("/" in n or n in ("Conv", "Conv_1") for n in names):
        return names
    return None


def load_official_h5(model, path, names):
    """Load an h5 file in the official keras.applications layout into our ``model``."""
    ours = weighted_leaf_layers(model)
    loaded = set()
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        for name in names:
            weight_names = _decode(group[name].attrs["weight_names"])
            if not weight_names:
                continue
            target = ours.get(official_to_ours(name))
            if target is None:
                raise ValueError(
                    f"Weights file {path!r} has layer {name!r} (ours: {official_to_ours(name)!r}), "
                    f"which the model {model.name!r} does not have: wrong variant, alpha or include_top?"
                )
            values = [np.asarray(group[name][w]) for w in weight_names]
            expected = [tuple(w.shape) for w in target.weights]
            if [v.shape for v in values] != expected:
                raise ValueError(
                    f"Weights file {path!r}: layer {name!r} has shapes {[v.shape for v in values]}, "
                    f"the model's {target.name!r} has {expected}."
                )
            target.set_weights(values)
            loaded.add(target.name)
    missing = sorted(set(ours) - loaded)
    if missing:
        raise ValueError(f"Weights file {path!r} has no weights for {len(missing)} layers of the model, e.g. {missing[:3]}.")


def copy_by_name(model, layers, origin):
    """Set every weighted layer of ``model`` from the layer of the same name in ``layers`` (``{name: layer}``).

    Layers of ``layers`` that ``model`` lacks (a top, a head) are left out; a layer of
    ``model`` missing from ``layers`` or of other shapes is a ``ValueError`` naming
    ``origin``, so that nothing is half loaded silently.
    """
    ours = weighted_leaf_layers(model)
    missing = sorted(set(ours) - set(layers))
    if missing:
        raise ValueError(
            f"Invalid weights: {origin!r} has no layer for {len(missing)} weighted layers of {model.name!r}, e.g. "
            f"{missing[:3]}; allowed: a model of the same variant and alpha (any top or head)."
        )
    for name, layer in ours.items():
        shapes = [tuple(w.shape) for w in layers[name].weights]
        expected = [tuple(w.shape) for w in layer.weights]
        if shapes != expected:
            raise ValueError(
                f"Invalid weights: {origin!r} has layer {name!r} with shapes {shapes}, "
                f"{model.name!r} needs {expected}; allowed: the same variant and alpha (reduced_tail=False "
                f"for weights of a full-tail model)."
            )
    for name, layer in ours.items():
        layer.set_weights(layers[name].get_weights())


def load_weights(model, path):
    """Load ``path`` into ``model``.

    ``path`` is an official keras.applications ``.h5``, a whole-model ``.keras``
    file (a model of this package, from ``from_keras``, or a keras.applications
    MobileNetV3 with a head: its layers are matched by name, tf.keras 2 names
    mapped as in the official files, so a classifier's ``.keras`` initializes an
    LR-ASPP or SSDLite backbone, whose strides or dilations differ but whose
    layers do not), or weights saved from a model of the same structure.
    """
    if not os.path.isfile(path):
        checks.fail("weights", path, "None, 'imagenet' or the path of an existing weights file")
    if path.endswith(".keras"):
        source = keras.saving.load_model(path, compile=False)
        copy_by_name(model, {official_to_ours(n): layer for n, layer in weighted_leaf_layers(source).items()}, path)
        return
    names = _official_layer_names(path) if path.endswith(".h5") else None
    if names is not None:
        load_official_h5(model, path, names)
        return
    try:
        model.load_weights(path)
    except ValueError as error:
        raise ValueError(
            f"Invalid weights: {path!r} does not fit {model.name!r} layer for layer ({error}); allowed: weights "
            f"saved from the same model, an official keras.applications .h5, or a whole model's .keras file "
            f"(matched by layer name)."
        ) from None


def copy_from_keras_applications(model, reference):
    """Copy the weights of a ``keras.applications`` MobileNetV3 (either Keras line) into our ``model``."""
    theirs = weighted_leaf_layers(reference)
    mapped = {official_to_ours(name): layer for name, layer in theirs.items()}
    unmatched = sorted(set(mapped) ^ set(weighted_leaf_layers(model)))
    if unmatched:
        raise ValueError(
            f"Invalid `reference`: received {reference.name!r}, whose layers do not match {model.name!r} "
            f"(e.g. {unmatched[:3]}); allowed: the same variant, alpha and include_top."
        )
    copy_by_name(model, mapped, reference.name)
