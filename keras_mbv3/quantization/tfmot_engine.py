"""Quantization-aware training with tfmot (the tf_keras line's engine).

``quantize`` applies to the flat int8 form of a model (tfmot only sees
top-level layers of a functional model) ``MobileNetV3QuantizeScheme``: tfmot's default 8-bit layout transforms (which
fold BN into the preceding conv and fuse ReLUs) with a registry that also knows
our layers and the standard layers MobileNetV3 uses but tfmot's default
registry rejects (``Multiply``, ``Rescaling``).

A layer whose output is read only by a ``Concatenate`` (through reshapes:
SSDLite's head convs) gets no output range of its own (``graph.only_feeds_a_concat``,
the Keras 3 engine's rule): tfmot would quantize it, and the converter would
then requantize each input of the concat to the concat's scale.
"""

import functools

from keras_mbv3 import checks
from keras_mbv3.backend import keras
from keras_mbv3.graph import Graph, only_feeds_a_concat
from keras_mbv3.layers import LRASPP, HardGate, HardSigmoid, HardSwish, InvertedResidual, SpaceToDepth, SqueezeExcite
from keras_mbv3.quantization import xnnpack_limits
from keras_mbv3.quantization.calibration import GATE_OUTPUT_RANGE, activation_ranges

TFMOT_MISSING = (
    "Quantization-aware training on tf_keras uses tensorflow-model-optimization, which is not installed: "
    "`pip install keras-mbv3[tfmot]`, or use Keras 3 (unset TF_USE_LEGACY_KERAS), whose engine needs no tfmot."
)


def _tfmot():
    try:
        import tensorflow_model_optimization as tfmot
    except ImportError as error:
        raise ImportError(TFMOT_MISSING) from error
    return tfmot


@functools.lru_cache(maxsize=None)
def _scheme_classes():
    """Our quantize configs, registry and scheme; defined on first use (tfmot only on the tf_keras line)."""
    _tfmot()
    from tensorflow_model_optimization.python.core.quantization.keras import quantize_config, quantizers
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_configs as configs,
        default_8bit_quantize_registry as registry,
        default_8bit_quantize_scheme as scheme,
    )

    class FixedRangeOutputQuantizeConfig(quantize_config.QuantizeConfig):
        """Quantize a weightless layer's output to the fixed range [0, 6] (the ``HardGate`` gate)."""

        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            low, high = GATE_OUTPUT_RANGE
            return [quantizers.FixedQuantizer(num_bits=8, init_min=low, init_max=high, narrow_range=False)]

        def get_config(self):
            return {}

    class MobileNetV3QuantizeRegistry(registry.Default8BitQuantizeRegistry):
        """tfmot's default 8-bit registry plus our activations and the merges MobileNetV3 uses."""

        def __init__(self):
            super().__init__()
            output = configs.Default8BitOutputQuantizeConfig()
            for layer_class in (HardSwish, HardSigmoid, keras.layers.Multiply, keras.layers.Rescaling):
                self._layer_quantize_map[layer_class] = output
            self._layer_quantize_map[HardGate] = FixedRangeOutputQuantizeConfig()
            self._layer_quantize_map[SpaceToDepth] = registry._no_quantize(SpaceToDepth)  # as tfmot's Reshape

    class MobileNetV3QuantizeScheme(scheme.Default8BitQuantizeScheme):
        """tfmot's default 8-bit layout transforms with ``MobileNetV3QuantizeRegistry``."""

        def get_quantize_registry(self):
            return MobileNetV3QuantizeRegistry()

        @staticmethod
        def without_output_range(config):
            """A registry's ``config`` without activation and output quantizers; None for one to keep as is."""
            if isinstance(config, registry.Default8BitQuantizeConfig):  # conv, dense: weights stay quantized
                return type(config)(config.weight_attrs, [], False)
            if isinstance(config, configs.Default8BitOutputQuantizeConfig):  # add, multiply, activations, concat
                return configs.NoOpQuantizeConfig()
            return None  # no quantizer already (reshapes), or a fixed range (HardGate)

    custom_objects = {
        "FixedRangeOutputQuantizeConfig": FixedRangeOutputQuantizeConfig,
        "Default8BitOutputQuantizeConfig": configs.Default8BitOutputQuantizeConfig,
    }
    return MobileNetV3QuantizeScheme, custom_objects


def quantize_scope():
    """Context in which saved QAT models of this package load (``keras.models.load_model``)."""
    tfmot = _tfmot()
    _, custom = _scheme_classes()
    layers = {cls.__name__: cls for cls in (HardGate, HardSwish, HardSigmoid, SpaceToDepth, SqueezeExcite,
                                            InvertedResidual, LRASPP)}  # fmt: skip
    return tfmot.quantization.keras.quantize_scope({**layers, **custom})


def quantize(folded, images=None):
    """The tfmot QAT model of ``folded`` (the int8 form of a flat tf_keras model); see ``quantize_model``.

    With ``images``, every activation range starts at the float model's
    (tfmot starts them at [-6, 6] and moves them 0.1% per step).
    """
    tfmot = _tfmot()
    scheme = _scheme_classes()[0]()
    registry = scheme.get_quantize_registry()
    for node in Graph(folded).nodes:  # BN folds in tfmot's layout transforms, not through its registry
        if not (node.is_input or registry.supports(node.layer) or isinstance(node.layer, keras.layers.BatchNormalization)):
            checks.unsupported_layer(node.layer, "the layers of tfmot's default 8-bit registry, Multiply, Rescaling "
                                                 "and keras_mbv3's layers")  # fmt: skip
    own_configs = _concat_input_configs(folded, scheme)
    with quantize_scope():
        # tfmot's quantize_annotate_model, with our configs for the layers that only feed a concat
        annotated = keras.models.clone_model(
            folded, clone_function=lambda layer: tfmot.quantization.keras.quantize_annotate_layer(
                layer, own_configs.get(layer.name)))
        qat = tfmot.quantization.keras.quantize_apply(annotated, scheme=scheme)
    if images is not None:
        calibrate_ranges(qat, folded, images)
    return qat


def _concat_input_configs(folded, scheme):
    """``{layer name: QuantizeConfig}`` of the layers whose output only feeds a concat: no output range.

    The concat's output range then covers them, and the converter gives each
    concat input the concat's scale (no requantize op). tfmot's own
    ``ConcatTransform`` only drops the output quantizer of a concat's direct
    inputs (the inner concat of ``Concatenate([a, Concatenate([b, c])])``, a
    ``Reshape``), not a conv's activation quantizer nor anything behind a reshape.
    """
    g = Graph(folded)
    registry = scheme.get_quantize_registry()
    found = {}
    for node in g.nodes:
        layer = node.layer
        if node.is_input or len(node.outputs) != 1 or not registry.supports(layer):
            continue
        if only_feeds_a_concat(g, node.outputs[0]):
            config = scheme.without_output_range(registry.get_quantize_config(layer))
            if config is not None:
                found[layer.name] = config
    return found


def range_constraints(qat_model):
    """The ``xnnpack_limits.Constraint`` of every int8 ADD and MUL of the tfmot ``qat_model``'s export."""
    g = Graph(qat_model)
    variables = _range_variables(qat_model)

    def inner(layer):
        return getattr(layer, "layer", layer)

    def range_of(tensor):
        node = g.producer(tensor)
        while True:
            layer = inner(node.layer)
            if isinstance(layer, HardGate):
                return xnnpack_limits.Range(*GATE_OUTPUT_RANGE, fixed=True)
            if layer.name in variables:
                return xnnpack_limits.Range(*variables[layer.name])
            if not node.inputs:
                return None
            node = g.producer(node.inputs[0])  # an op that keeps its input's range (tfmot quantizes none after it)

    return xnnpack_limits.constraints(g, range_of, inner)


def is_qat_model(model):
    """Whether ``model`` was made by tfmot (has quantize wrappers)."""
    return any(type(layer).__name__ in ("QuantizeWrapper", "QuantizeWrapperV2", "QuantizeLayer") for layer in model.layers)


def _range_variables(qat_model):
    """``{float layer name: (min variable, max variable)}`` of the moving-average activation ranges.

    The input ``QuantizeLayer`` is listed under the name of the model input.
    """
    g = Graph(qat_model)
    found = {}
    for layer in qat_model.layers:
        short = {v.name.split("/")[-1].split(":")[0]: v for v in layer.non_trainable_weights}
        if type(layer).__name__ == "QuantizeLayer":
            (source,) = g.input_layers(layer)
            found[source.name] = (short.get(f"{layer.name}_min"), short.get(f"{layer.name}_max"))
            continue
        inner = getattr(layer, "layer", None)
        for prefix in _RANGES:
            if inner is not None and f"{prefix}_min" in short:
                found[inner.name] = (short[f"{prefix}_min"], short[f"{prefix}_max"])
    return {name: pair for name, pair in found.items() if pair[0] is not None and pair[1] is not None and not pair[0].shape.rank}


_RANGES = ("output", "post_activation")


def calibrate_ranges(qat_model, float_model, images):
    """Set the tfmot ``qat_model``'s activation ranges to ``float_model``'s (``calibration.activation_ranges``).

    The weight ranges are set by tfmot's own quantizers in training mode
    (otherwise only the first training step sets them, and inference before it
    rounds small kernels to 0).
    """
    for layer in qat_model.layers:
        for weight, quantizer, quantizer_vars in getattr(layer, "_weight_vars", []):
            quantizer(weight, True, weights=quantizer_vars)
    variables = _range_variables(qat_model)
    for name, (low, high) in activation_ranges(float_model, variables, images).items():
        minimum, maximum = variables[name]
        minimum.assign(low)
        maximum.assign(high)
