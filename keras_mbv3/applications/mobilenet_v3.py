"""MobileNetV3Large / MobileNetV3Small with the keras.applications signature.

Built from ``keras_mbv3.layers`` (one ``InvertedResidual`` per row of
``specs.LARGE`` / ``specs.SMALL``) as functional models with the Keras 3
keras.applications layer names (``conv``, ``conv_bn``, ``expanded_conv``,
``expanded_conv_1``, ..., ``conv_1``, ``conv_2``, ``logits``, ``predictions``).
"""

import os
import warnings

from keras_mbv3 import checks
from keras_mbv3.applications import sizes, specs, weights as weight_files
from keras_mbv3.backend import keras
from keras_mbv3.layers import InvertedResidual, make_divisible
from keras_mbv3.layers.activations import activation_layer
from keras_mbv3.layers.conv_bn import conv_bn_act
from keras_mbv3.layers.inverted_residual import BN_MOMENTUM

OUTPUT_STRIDES = (8, 16, 32)
POOLINGS = (None, "avg", "max")
INPUT_SIZE = sizes.CLASSIFICATION
STEM, LAST_CONV = "conv", "conv_1"  # keras.applications' names (with "_bn" and "_{activation}")


def _conv_bn_act(x, filters, strides, activation, name, bn_momentum):
    conv = keras.layers.Conv2D(filters, 1 if strides == 1 else 3, strides=strides, padding="same",
                               use_bias=False, name=name)  # fmt: skip
    for layer in conv_bn_act(conv, activation, bn_momentum):
        x = layer(x)
    return x


def _check_arguments(weights, include_top, classes, alpha, minimalistic, pooling, dropout_rate,
                     classifier_activation, output_stride, reduced_tail, bn_momentum):  # fmt: skip
    if not (weights in ("imagenet", None) or (isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights))):
        checks.fail("weights", weights, "None (random initialization), 'imagenet' or the path to an existing weights file")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha <= 0:
        checks.fail("alpha", alpha, "a positive width multiplier such as 0.75, 1.0 or 1.25")
    checks.positive_int("classes", classes)
    checks.one_of("pooling", pooling, POOLINGS)
    checks.one_of("output_stride", output_stride, OUTPUT_STRIDES)
    checks.one_of("minimalistic", minimalistic, (True, False))
    checks.one_of("include_top", include_top, (True, False))
    checks.one_of("reduced_tail", reduced_tail, (True, False))
    checks.momentum("bn_momentum", bn_momentum)
    if not isinstance(dropout_rate, (int, float)) or not 0 <= dropout_rate < 1:
        checks.fail("dropout_rate", dropout_rate, "a number in [0, 1)")
    if weights == "imagenet":
        if include_top and classes != 1000:
            checks.fail("classes", classes, "1000 when weights='imagenet' and include_top=True")
        if alpha not in weight_files.IMAGENET_ALPHAS[minimalistic]:
            allowed = weight_files.IMAGENET_ALPHAS[minimalistic]
            checks.fail("alpha", alpha, f"{allowed} with weights='imagenet' and minimalistic={minimalistic}")
        if reduced_tail:
            checks.fail("reduced_tail", reduced_tail, "False with weights='imagenet' (no such weights)")
        if include_top and classifier_activation not in ("softmax", None):
            checks.fail("classifier_activation", classifier_activation, "'softmax' or None with weights='imagenet'")


def _is_keras_tensor(value):
    try:
        return keras.backend.is_keras_tensor(value)
    except ValueError:  # tf_keras raises for non-tensors
        return False


def _input(input_shape, input_tensor):
    """The model's input tensor and the source inputs, as keras.applications builds them."""
    if input_tensor is not None and not _is_keras_tensor(input_tensor):
        checks.fail("input_tensor", type(input_tensor).__name__, "a Keras tensor (from keras.Input or a layer)")
    if input_shape is None and input_tensor is not None:
        input_shape = tuple(input_tensor.shape[1:])
    if input_shape is None:
        input_shape = (None, None, 3)
    input_shape = INPUT_SIZE.check_shape("input_shape", input_shape)
    if input_tensor is not None and tuple(input_tensor.shape[1:]) != input_shape:
        checks.fail("input_shape", input_shape, f"the shape of input_tensor, {tuple(input_tensor.shape[1:])}")
    if input_tensor is None:
        image = keras.Input(shape=input_shape)
        return image, image
    return input_tensor, keras.utils.get_source_inputs(input_tensor)


def build_mobilenet_v3(
    spec, input_shape=None, alpha=1.0, minimalistic=False, include_top=True, weights="imagenet",
    input_tensor=None, classes=1000, pooling=None, dropout_rate=0.2, classifier_activation="softmax",
    include_preprocessing=True, name=None, output_stride=32, reduced_tail=False, relu_only=False,
    bn_momentum=BN_MOMENTUM,
):  # fmt: skip
    """Build a MobileNetV3 from a ``specs.NetworkSpec``; see ``MobileNetV3Large`` for the arguments.

    ``relu_only`` replaces every hard-swish with ReLU (same MAdds and weights):
    the latency lower bound that the benchmarks compare the int8 form against.
    """
    _check_arguments(weights, include_top, classes, alpha, minimalistic, pooling, dropout_rate,
                     classifier_activation, output_stride, reduced_tail, bn_momentum)  # fmt: skip
    image, inputs = _input(input_shape, input_tensor)
    if weights == "imagenet" and tuple(image.shape[1:3]) != (224, 224):
        warnings.warn("`input_shape` is undefined or not 224x224: the 224x224 ImageNet weights are loaded anyway.",
                      stacklevel=3)  # fmt: skip
    network = specs.minimalistic(spec) if minimalistic else spec
    network = specs.reduced_tail(network) if reduced_tail else network
    network = specs.relu_only(network) if relu_only else network
    activation = "relu" if minimalistic or relu_only else "hard_swish"

    x = image
    if include_preprocessing:
        x = keras.layers.Rescaling(scale=1.0 / 127.5, offset=-1.0, name="rescaling")(x)
    x = _conv_bn_act(x, specs.STEM_FILTERS, 2, activation, STEM, bn_momentum)
    for block in specs.scaled_blocks(network, alpha, output_stride):
        x = InvertedResidual(
            block.filters, kernel_size=block.kernel, strides=block.strides, expanded_filters=block.expanded,
            se_ratio=0.25 if block.se else None, activation=block.activation, dilation_rate=block.dilation,
            bn_momentum=bn_momentum, name=block.name,
        )(x)  # fmt: skip
    x = _conv_bn_act(x, make_divisible(x.shape[-1] * 6), 1, activation, LAST_CONV, bn_momentum)
    if include_top:
        last_point = network.last_point_filters
        if alpha > 1.0:
            last_point = make_divisible(last_point * alpha)
        x = keras.layers.GlobalAveragePooling2D(keepdims=True, name="avg_pool")(x)
        x = keras.layers.Conv2D(last_point, 1, padding="same", use_bias=True, name="conv_2")(x)
        x = activation_layer(activation, name=f"conv_2_{activation}")(x)
        if dropout_rate > 0:
            x = keras.layers.Dropout(dropout_rate, name="dropout")(x)
        x = keras.layers.Conv2D(classes, 1, padding="same", name="logits")(x)
        x = keras.layers.Flatten(name="flatten")(x)
        x = keras.layers.Activation(classifier_activation, name="predictions")(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    model = keras.Model(inputs, x, name=name)

    if weights == "imagenet":
        file_name, file_hash = weight_files.imagenet_file(spec.name, minimalistic, alpha, include_top)
        weight_files.load_weights(model, weight_files.fetch(file_name, file_hash))
    elif weights is not None:
        weight_files.load_weights(model, os.fspath(weights))
    return model


DOC = """Instantiate the {size} MobileNetV3 ("Searching for MobileNetV3", Howard et al., 2019).

A drop-in for ``keras.applications.MobileNetV3{size}``: the same arguments,
defaults, checks, layer names, parameter counts and (with the same weights)
outputs, built from ``keras_mbv3.layers`` so that the model quantizes with
``keras_mbv3.quantization``. Channels last only.

Args:
    input_shape: ``(height, width, 3)``; height and width at least 32. Defaults to
        ``(None, None, 3)`` (or the shape of ``input_tensor``).
    alpha: width multiplier; the ImageNet weights exist for 0.75 and 1.0
        (1.0 only when ``minimalistic``).
    minimalistic: 3x3 kernels, ReLU and no squeeze-excite everywhere.
    include_top: add the classification head (pool, 1x1 conv, dropout, logits).
    weights: None, ``"imagenet"`` (the official keras.applications files, fetched
        into the Keras cache and checked against their md5) or a path: an official
        ``.h5`` as downloaded, or weights saved from a model of this package.
    input_tensor: a Keras tensor to use as the input.
    classes: number of classes (1000 with ImageNet weights and the top).
    pooling: without the top, None (4D output), ``"avg"`` or ``"max"``.
    dropout_rate: dropout before the logits, in [0, 1).
    classifier_activation: activation of the top ("softmax" or None with ImageNet weights).
    include_preprocessing: rescale inputs from [0, 255] to [-1, 1] in the model.
    name: the model name.
    output_stride: 32, 16 or 8: the last stages dilate instead of striding (ours).
    reduced_tail: halve the channels of the last stage, as the paper does for
        detection and segmentation (ours).
    bn_momentum: momentum of every BatchNormalization, in (0, 1); 0.999 as
        keras.applications. Lower (e.g. 0.9) for short trainings, whose moving
        statistics would not converge otherwise. Stored in the layers' configs,
        so a saved and reloaded model keeps it (ours).

Returns:
    A functional ``keras.Model``: ``(batch, classes)`` with the top, else
    ``(batch, H / output_stride, W / output_stride, C)`` or ``(batch, C)`` pooled.
"""


def MobileNetV3Large(
    input_shape=None, alpha=1.0, minimalistic=False, include_top=True, weights="imagenet",
    input_tensor=None, classes=1000, pooling=None, dropout_rate=0.2, classifier_activation="softmax",
    include_preprocessing=True, name="MobileNetV3Large", *, output_stride=32, reduced_tail=False,
    bn_momentum=BN_MOMENTUM,
):  # fmt: skip
    return build_mobilenet_v3(
        specs.LARGE, input_shape, alpha, minimalistic, include_top, weights, input_tensor, classes, pooling,
        dropout_rate, classifier_activation, include_preprocessing, name, output_stride, reduced_tail,
        bn_momentum=bn_momentum,
    )  # fmt: skip


def MobileNetV3Small(
    input_shape=None, alpha=1.0, minimalistic=False, include_top=True, weights="imagenet",
    input_tensor=None, classes=1000, pooling=None, dropout_rate=0.2, classifier_activation="softmax",
    include_preprocessing=True, name="MobileNetV3Small", *, output_stride=32, reduced_tail=False,
    bn_momentum=BN_MOMENTUM,
):  # fmt: skip
    return build_mobilenet_v3(
        specs.SMALL, input_shape, alpha, minimalistic, include_top, weights, input_tensor, classes, pooling,
        dropout_rate, classifier_activation, include_preprocessing, name, output_stride, reduced_tail,
        bn_momentum=bn_momentum,
    )  # fmt: skip


MobileNetV3Large.__doc__ = DOC.format(size="Large")
MobileNetV3Small.__doc__ = DOC.format(size="Small")


def preprocess_input(x, data_format=None):
    """Return ``x`` unchanged: preprocessing is part of the model (as keras.applications)."""
    return x


def decode_predictions(preds, top=5):
    """Decode ImageNet predictions, as ``keras.applications.mobilenet_v3.decode_predictions``."""
    return keras.applications.imagenet_utils.decode_predictions(preds, top=top)
