"""Quantization-aware training with tfmot (tf_keras line).

``quantize_model`` flattens composite layers into their sub-layers (tfmot only
sees top-level layers of a functional model), then applies
``MobileNetV3QuantizeScheme``: tfmot's default 8-bit layout transforms (which
fold BN into the preceding conv and fuse ReLUs) with a registry that also knows
our layers and the standard layers MobileNetV3 uses but tfmot's default
registry rejects (``Multiply``, ``Rescaling``).
"""

import functools

from keras_mbv3.backend import IS_KERAS_3, LEGACY_KERAS_ENV, keras
from keras_mbv3.graph import Graph, is_functional
from keras_mbv3.layers import LRASPP, HardGate, HardSigmoid, HardSwish, InvertedResidual, SpaceToDepth, SqueezeExcite
from keras_mbv3.layers.flatten import flatten_model
from keras_mbv3.quantization.calibration import CALIBRATION_SAMPLES, activation_ranges, representative_images
from keras_mbv3.quantization.int8_form import int8_form

KERAS_3_ERROR = (
    "Quantization-aware training uses tensorflow-model-optimization, which needs tf_keras (Keras 2), "
    f"but this process uses Keras 3. Set the environment variable {LEGACY_KERAS_ENV}=1 before "
    "TensorFlow is imported (e.g. `TF_USE_LEGACY_KERAS=1 python train.py`)."
)


def _tfmot():
    if IS_KERAS_3:
        raise RuntimeError(KERAS_3_ERROR)
    import tensorflow_model_optimization as tfmot

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
            return [quantizers.FixedQuantizer(num_bits=8, init_min=0.0, init_max=6.0, narrow_range=False)]

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


def quantize_model(model, representative_dataset=None):
    """A tfmot QAT model computing ``model`` (any model built with ``keras_mbv3.layers``).

    Composite layers are flattened first (same weights, same float outputs), so
    that BN folds into convs and every activation, multiply and add gets a
    fake-quantizer; no ``Lambda``/``TFOpLambda`` is involved. The hard
    activations take their int8 form (``keras_mbv3.quantization.int8_form``):
    ``x * relu6(x + 3)`` with the gate in a fixed [0, 6] range and the 1/6
    folded into the convs that read it, which XNNPACK runs in int8.

    Args:
        model: a functional tf_keras model.
        representative_dataset: optional images (an array, a ``tf.data.Dataset``
            of images or ``(images, labels)`` batches) to start every activation
            range at the float model's (mean per-batch min and max) instead of
            tfmot's [-6, 6]; short fine-tunes need it, since the moving averages
            move 0.1% per step.

    Raises:
        RuntimeError: under Keras 3 (tfmot needs ``TF_USE_LEGACY_KERAS=1``).
        TypeError: for a model that is not a functional Keras model.
    """
    tfmot = _tfmot()
    if not is_functional(model):
        raise TypeError(
            f"Invalid `model`: received {type(model).__name__}; allowed: a functional tf_keras model "
            "(Sequential and subclassed models cannot be flattened)."
        )
    folded = int8_form(flatten_model(model))
    scheme, _ = _scheme_classes()
    with quantize_scope():
        annotated = tfmot.quantization.keras.quantize_annotate_model(folded)
        qat = tfmot.quantization.keras.quantize_apply(annotated, scheme=scheme())
    if representative_dataset is not None:
        calibrate_ranges(qat, folded, representative_images(representative_dataset, CALIBRATION_SAMPLES))
    return qat


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
