"""LR-ASPP segmentation models (Section 6.3 of the paper)."""

import os

from keras_mbv3 import checks
from keras_mbv3.applications import mobilenet_v3, sizes, weights as weight_files
from keras_mbv3.applications.features import feature_info
from keras_mbv3.backend import keras
from keras_mbv3.graph import layer_outputs
from keras_mbv3.layers import LRASPP

LOW_LEVEL, HIGH_LEVEL = "P3", "P5"
INPUT_SIZE = sizes.SEGMENTATION


def _lraspp_model(backbone_fn, name, num_classes, input_shape, alpha, minimalistic, weights,
                  backbone_weights, output_stride, reduced_tail, include_preprocessing, upsample,
                  bn_momentum):  # fmt: skip
    checks.positive_int("num_classes", num_classes)
    checks.one_of("output_stride", output_stride, (8, 16))
    checks.one_of("upsample", upsample, (True, False))
    checks.momentum("bn_momentum", bn_momentum, allow_none=True)
    momentum = {} if bn_momentum is None else {"bn_momentum": bn_momentum}
    if weights is not None and not (isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights)):
        checks.fail("weights", weights, "None or the path of an existing weights file of this model")
    if input_shape is not None:
        INPUT_SIZE.check_shape("input_shape", input_shape)
    backbone = backbone_fn(
        input_shape=input_shape, alpha=alpha, minimalistic=minimalistic, include_top=False,
        weights=backbone_weights, include_preprocessing=include_preprocessing,
        output_stride=output_stride, reduced_tail=reduced_tail, **momentum,
    )  # fmt: skip
    taps = {i.level: i.layer for i in feature_info(backbone)}
    tensors = layer_outputs(backbone)
    low, high = tensors[taps[LOW_LEVEL]], tensors[taps[HIGH_LEVEL]]
    logits = LRASPP(num_classes, name="lraspp", **momentum)([low, high])
    if upsample:
        logits = keras.layers.UpSampling2D(8, interpolation="bilinear", name="upsample")(logits)
    model = keras.Model(backbone.input, logits, name=name)
    if weights is not None:
        weight_files.load_weights(model, os.fspath(weights))
    return model


SEGMENTATION_DOC = """LR-ASPP semantic segmentation on a MobileNetV3{size} backbone.

Low-level features at stride 8 (``P3``) and high-level features at stride 16
(``P5``, the last 1x1 conv with the last stage dilated: ``output_stride=16``) feed the
``LRASPP`` decoder; with ``upsample=True`` the logits are bilinearly upsampled
to the input size. The output is logits (no softmax). With ``num_classes=21`` the
Large model has the trainable parameter count of torchvision's
``lraspp_mobilenet_v3_large``.

Args:
    num_classes: number of classes (background included).
    input_shape: ``(height, width, 3)`` with height and width multiples of 16, or None.
    alpha, minimalistic, reduced_tail, include_preprocessing: as ``MobileNetV3{size}``.
    weights: None or the path of weights saved from this model.
    backbone_weights: None, ``"imagenet"`` (the classification weights) or a path.
    output_stride: 16 (the paper's) or 8.
    upsample: upsample the logits 8x to the input size.
    bn_momentum: None (the default) keeps each part's own BatchNormalization
        momentum, 0.999 in the backbone (as keras.applications) and 0.99 in the
        ``LRASPP`` head; a number in (0, 1) sets every BatchNormalization of the
        model to it (e.g. 0.9 for a short training). Stored in the layers'
        configs, so a saved and reloaded model keeps it.

Returns:
    A functional model: ``(batch, H, W, num_classes)``, or ``(batch, H/8, W/8,
    num_classes)`` without ``upsample``.
"""


def LRASPPMobileNetV3Large(num_classes, input_shape=None, alpha=1.0, minimalistic=False, weights=None,
                           backbone_weights=None, output_stride=16, reduced_tail=False,
                           include_preprocessing=True, upsample=True, *, bn_momentum=None):  # fmt: skip
    return _lraspp_model(mobilenet_v3.MobileNetV3Large, "LRASPPMobileNetV3Large", num_classes, input_shape,
                         alpha, minimalistic, weights, backbone_weights, output_stride, reduced_tail,
                         include_preprocessing, upsample, bn_momentum)  # fmt: skip


def LRASPPMobileNetV3Small(num_classes, input_shape=None, alpha=1.0, minimalistic=False, weights=None,
                           backbone_weights=None, output_stride=16, reduced_tail=False,
                           include_preprocessing=True, upsample=True, *, bn_momentum=None):  # fmt: skip
    return _lraspp_model(mobilenet_v3.MobileNetV3Small, "LRASPPMobileNetV3Small", num_classes, input_shape,
                         alpha, minimalistic, weights, backbone_weights, output_stride, reduced_tail,
                         include_preprocessing, upsample, bn_momentum)  # fmt: skip


LRASPPMobileNetV3Large.__doc__ = SEGMENTATION_DOC.format(size="Large")
LRASPPMobileNetV3Small.__doc__ = SEGMENTATION_DOC.format(size="Small")
