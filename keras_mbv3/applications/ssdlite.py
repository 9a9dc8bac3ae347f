"""SSDLite object detection on MobileNetV3 (Section 6.2 of the paper), as torchvision builds it."""

import functools

from keras_mbv3 import checks
from keras_mbv3.applications import mobilenet_v3, sizes
from keras_mbv3.applications.features import feature_tensors
from keras_mbv3.backend import keras
from keras_mbv3.detection.anchors import anchors_per_location, default_anchors
from keras_mbv3.detection.postprocess import decode_detections
from keras_mbv3.layers.ssdlite import SSDLiteExtraBlock, SSDLiteHead

EXTRA_FILTERS = (512, 256, 256, 128)
ASPECT_RATIOS = (2, 3)
BOX_VALUES = 4
OUTPUT_NAMES = ("box_encodings", "class_logits")
# XNNPACK (ai-edge-litert 2.3.0) takes a CONCATENATION of at most 5 inputs, float or int8: the six
# maps' rows are joined as [map 0, concat(maps 1-5)] (a 6-input concat left both concats out of XNNPACK).
MAX_CONCAT_INPUTS = 5
INPUT_SIZE = sizes.DETECTION
# The evaluation's and the post-process's defaults, as torchvision's SSDLite with COCO's 100 detections per image
SCORE_THRESHOLD, IOU_THRESHOLD, MAX_DETECTIONS = 0.01, 0.55, 100


# The first map's stride -> (the backbone levels tapped, the smallest anchor scale). 16: the paper's and
# torchvision's SSDLite (C4, C5). 8: C3 too, with anchors from 0.1 of the side, for small objects.
MIN_STRIDES = {16: (("P4", "P5"), 0.2), 8: (("P3", "P4", "P5"), 0.1)}


def feature_sizes(image_size, min_stride=16):
    """``[(H, W), ...]`` of the maps SSDLite predicts from, for an ``(H, W)`` input: six, seven with ``min_stride=8``.

    C3 is at stride 8, C4 at 16 and C5 at 32; each extra block halves, rounding up
    (what both the backbone's stride-2 convs and the extra blocks' "same" padding do).
    """
    checks.one_of("min_stride", min_stride, tuple(MIN_STRIDES))
    sizes = [tuple(-(-s // min_stride) for s in image_size)]
    for _ in range(len(MIN_STRIDES[min_stride][0]) - 1 + len(EXTRA_FILTERS)):
        sizes.append(tuple(-(-s // 2) for s in sizes[-1]))
    return sizes


@functools.lru_cache(maxsize=None)
def size_anchors(image_size, min_stride=16):
    """The default anchors ``(N, 4)`` (ycenter, xcenter, height, width, normalized) of an ``(H, W)`` input.

    Cached and shared, so read-only.
    """
    found = default_anchors(feature_sizes(tuple(image_size), min_stride), min_scale=MIN_STRIDES[min_stride][1],
                            aspect_ratios=ASPECT_RATIOS)  # fmt: skip
    found.setflags(write=False)
    return found


def stride_of(image_size, rows):
    """The first map's stride (``MIN_STRIDES``) of an SSDLite of ``(H, W)`` input with ``rows`` anchor rows, else None.

    The anchor counts differ (96 px: 312 rows at 16, 1,176 at 8), so the rows tell.
    """
    return next((s for s in MIN_STRIDES if len(size_anchors(tuple(image_size), s)) == rows), None)


def first_stride(model):
    """The stride of an SSDLite model's first map (``MIN_STRIDES``), told by its anchor count (``stride_of``).

    Read from the model's input size and output rows, so it works on the built model,
    its flattened and QAT forms and a reloaded file alike.
    """
    size = tuple(model.inputs[0].shape[1:3])
    if None in size:
        checks.fail("model", model.name, "a model with a static input height and width")
    rows = model.outputs[0].shape[1]
    stride = stride_of(size, rows)
    if stride is None:
        checks.fail("model", model.name, f"an SSDLite model of this package ({rows} anchor rows fit no first-map "
                    f"stride {tuple(MIN_STRIDES)} at {size})")  # fmt: skip
    return stride


def anchors(model):
    """The default anchors ``(N, 4)`` of an SSDLite model (a copy of ``size_anchors`` of its input size and
    ``min_stride``)."""
    return size_anchors(tuple(model.inputs[0].shape[1:3]), first_stride(model)).copy()


def postprocess(image_size, score_threshold=SCORE_THRESHOLD, iou_threshold=IOU_THRESHOLD,
                max_detections=MAX_DETECTIONS, min_stride=16):  # fmt: skip
    """The TFLite post-process (``quantization.DetectionPostProcess``) of an SSDLite input of ``(H, W)``.

    The defaults are the evaluation's (torchvision's SSDLite, COCO's 100 detections per image),
    so that a ``.tflite`` file's mAP is the Keras model's.
    """
    from keras_mbv3.quantization import DetectionPostProcess  # TensorFlow's op: needed at export only

    return DetectionPostProcess(size_anchors(tuple(image_size), min_stride), score_threshold=score_threshold,
                                iou_threshold=iou_threshold, max_detections=max_detections,
                                detections_per_class=max_detections)  # fmt: skip


def decode(box_encodings, class_logits, image_size, score_threshold=SCORE_THRESHOLD, max_detections=MAX_DETECTIONS,
           min_stride=None):  # fmt: skip
    """``{boxes, classes, scores, count}`` of an SSDLite model's outputs for an ``(H, W)`` input.

    ``keras_mbv3.detection.decode_detections`` (decode + per-class NMS, numpy) with the
    anchors and the IoU threshold of ``postprocess``; ``min_stride`` None: the one whose
    anchor count the outputs have (``stride_of``).
    """
    if min_stride is None:
        min_stride = stride_of(image_size, box_encodings.shape[1])
        if min_stride is None:
            checks.fail("box_encodings", f"shape {tuple(box_encodings.shape)}", f"the anchor rows of an SSDLite of "
                        f"{tuple(image_size)} input: {[len(size_anchors(tuple(image_size), s)) for s in MIN_STRIDES]}")
    return decode_detections(box_encodings, class_logits, size_anchors(tuple(image_size), min_stride),
                             score_threshold=score_threshold, iou_threshold=IOU_THRESHOLD,
                             max_detections=max_detections)  # fmt: skip


def _ssdlite_model(backbone_fn, name, num_classes, input_shape, backbone_weights, bn_momentum, min_stride,
                   **backbone_options):  # fmt: skip
    checks.positive_int("num_classes", num_classes)
    if num_classes < 2:
        checks.fail("num_classes", num_classes, "an integer >= 2 (class 0 is the background)")
    checks.momentum("bn_momentum", bn_momentum, allow_none=True)
    levels = MIN_STRIDES[checks.one_of("min_stride", min_stride, tuple(MIN_STRIDES))][0]
    shape = INPUT_SIZE.check_shape("input_shape", input_shape)
    momentum = {} if bn_momentum is None else {"bn_momentum": bn_momentum}
    backbone = backbone_fn(input_shape=shape, include_top=False, weights=backbone_weights, **backbone_options,
                           **momentum)  # fmt: skip
    inputs, taps = feature_tensors(backbone, levels, tap="expansion")
    maps = [taps[level] for level in levels]
    for i, filters in enumerate(EXTRA_FILTERS, start=1):
        maps.append(SSDLiteExtraBlock(filters, name=f"extra_{i}", **momentum)(maps[-1]))
    per_location = anchors_per_location(ASPECT_RATIOS)
    boxes, logits = [], []
    for i, x in enumerate(maps):
        boxes.append(SSDLiteHead(per_location, BOX_VALUES, name=f"box_head_{i}", **momentum)(x))
        logits.append(SSDLiteHead(per_location, num_classes, name=f"class_head_{i}", **momentum)(x))
    outputs = [_concatenate(parts, output) for output, parts in zip(OUTPUT_NAMES, (boxes, logits))]
    return keras.Model(inputs, outputs, name=name)


def _concatenate(parts, name):
    """``parts`` joined along the rows, by concats of at most ``MAX_CONCAT_INPUTS`` inputs: six maps as
    ``[0, concat(1-5)]``, seven as ``[0, 1, concat(2-6)]``."""
    if len(parts) > MAX_CONCAT_INPUTS:
        first = len(parts) - MAX_CONCAT_INPUTS
        parts = parts[:first] + [keras.layers.Concatenate(axis=1, name=f"{name}_rest")(parts[first:])]
    return keras.layers.Concatenate(axis=1, name=name)(parts)


DETECTION_DOC = """SSDLite object detection on a MobileNetV3{size} backbone (torchvision's ``ssdlite320_mobilenet_v3_large``).

Predicts from six maps: C4, the expansion output (after its activation) of the
block that goes from stride 16 to 32 (``feature_model(..., tap="expansion")``'s
``P4``; Large: 672 channels), C5, the backbone's last 1x1 conv (Large: 480 with
the reduced tail), and four ``SSDLiteExtraBlock`` of 512, 256, 256 and 128
channels. Each map has an ``SSDLiteHead`` for box encodings and one for class
logits, 6 anchors per location (``anchors(model)``). With ``num_classes=91`` the
Large model has torchvision's 3,440,060 trainable parameters.

Args:
    num_classes: classes including the background, which is class 0.
    input_shape: ``(height, width, 3)``, height and width static multiples of 32.
    alpha, minimalistic, include_preprocessing: as ``MobileNetV3{size}``.
    backbone_weights: None, ``"imagenet"`` (the classification weights) or a path.
    reduced_tail: halve the last stage's channels (the paper's detection backbone).
    min_stride: 16 (the paper's maps) or 8: a seventh map first, C3 (the expansion
        output of the block that goes from stride 8 to 16), with anchors from 0.1 of
        the side (``MIN_STRIDES``), for small objects.
    bn_momentum: None keeps each part's own BatchNormalization momentum (0.999 in
        the backbone as keras.applications, 0.97 in the extra blocks and heads as
        torchvision's); a number in (0, 1) sets every BatchNormalization to it.

Returns:
    A functional model with outputs ``[box_encodings (batch, anchors, 4), class_logits
    (batch, anchors, num_classes)]``: encodings (ty, tx, th, tw) against the anchors
    with scales (10, 10, 5, 5) (``keras_mbv3.detection.decode``), logits before softmax.
"""


def SSDLiteMobileNetV3Large(num_classes, input_shape=(320, 320, 3), alpha=1.0, minimalistic=False,
                            backbone_weights=None, reduced_tail=True, include_preprocessing=True, *,
                            bn_momentum=None, min_stride=16):  # fmt: skip
    return _ssdlite_model(mobilenet_v3.MobileNetV3Large, "SSDLiteMobileNetV3Large", num_classes, input_shape,
                          backbone_weights, bn_momentum, min_stride, alpha=alpha, minimalistic=minimalistic,
                          reduced_tail=reduced_tail, include_preprocessing=include_preprocessing)


def SSDLiteMobileNetV3Small(num_classes, input_shape=(320, 320, 3), alpha=1.0, minimalistic=False,
                            backbone_weights=None, reduced_tail=True, include_preprocessing=True, *,
                            bn_momentum=None, min_stride=16):  # fmt: skip
    return _ssdlite_model(mobilenet_v3.MobileNetV3Small, "SSDLiteMobileNetV3Small", num_classes, input_shape,
                          backbone_weights, bn_momentum, min_stride, alpha=alpha, minimalistic=minimalistic,
                          reduced_tail=reduced_tail, include_preprocessing=include_preprocessing)


SSDLiteMobileNetV3Large.__doc__ = DETECTION_DOC.format(size="Large")
SSDLiteMobileNetV3Small.__doc__ = DETECTION_DOC.format(size="Small")
