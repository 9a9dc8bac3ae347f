"""Anchor matching: SSD training targets for one image, in backend ops (``tensor_ops``): Keras' backend, or
TensorFlow inside a ``tf.data`` map, where the recipes compute them."""

import numpy as np

from keras_mbv3 import checks
from keras_mbv3.detection.boxes import encode, iou
from keras_mbv3.ops import tensor_ops

BACKGROUND_BOX = [[0.0, 0.0, 1.0, 1.0]]


def anchor_corners(anchors):
    """``(N, 4)`` ``(ycenter, xcenter, height, width)`` -> corners ``(ymin, xmin, ymax, xmax)``."""
    ops = tensor_ops()
    anchors = ops.cast(anchors, "float32")
    center, size = anchors[:, :2], anchors[:, 2:]
    return ops.concatenate([center - size / 2, center + size / 2], axis=-1)


def match(gt_boxes, gt_labels, anchors, iou_threshold=0.5):
    """SSD targets of one image: the matched box encoding and class of every anchor.

    As torchvision's ``SSDMatcher``: each anchor takes the ground-truth box of
    highest IoU when that IoU is ``>= iou_threshold``; then every ground-truth box
    takes its own best anchor, even below the threshold (when two boxes share a
    best anchor, the later one keeps it). Ground-truth boxes that overlap no anchor,
    such as zero-area padding rows, match nothing. Graph-safe (a ``tf.data`` map, a
    jitted JAX function); any number of boxes, zero included.

    Args:
        gt_boxes: ``(G, 4)`` normalized corners ``(ymin, xmin, ymax, xmax)``.
        gt_labels: ``(G,)`` integer class ids, 1-based (0 is the background).
        anchors: ``(N, 4)`` ``(ycenter, xcenter, height, width)`` (``default_anchors``), N known.
        iou_threshold: in (0, 1].

    Returns:
        float32 ``(N, 5)``: columns 0-3 the encoding (``encode``) of the matched box
        (0 for background anchors), column 4 the matched class id (0: background).
    """
    threshold = checks.in_range("iou_threshold", iou_threshold, 0, 1, low_open=True, high_open=False)
    ops = tensor_ops()
    num_anchors = int(np.shape(anchors)[0])  # static: JAX's segment_max needs it
    anchors = ops.cast(anchors, "float32")
    gt_boxes = ops.reshape(ops.cast(gt_boxes, "float32"), (-1, 4))
    gt_labels = ops.reshape(ops.cast(gt_labels, "int32"), (-1,))
    num_gt = ops.shape(gt_boxes)[0]
    overlaps = iou(gt_boxes, anchor_corners(anchors))  # (G, N)

    # Row G, a sentinel of IoU -1, gives argmax a row when G = 0; anchors left on it are background.
    with_sentinel = ops.concatenate([overlaps, -ops.ones((1, num_anchors))], axis=0)
    best_gt = ops.cast(ops.argmax(with_sentinel, axis=0), "int32")
    matched = ops.where(ops.max(with_sentinel, axis=0) >= threshold, best_gt, num_gt)

    # Each box that overlaps some anchor takes its best one (the later box on a shared anchor); anchors
    # that no box chose get the max of nothing, the lowest int32.
    box_ids = ops.cast(ops.arange(num_gt), "int32")
    gt_ids = ops.where(ops.max(overlaps, axis=1, initial=0.0) > 0, box_ids, -1)  # initial: G may be 0
    best_anchor = ops.cast(ops.argmax(overlaps, axis=1), "int32")
    forced = ops.segment_max(gt_ids, best_anchor, num_segments=num_anchors)
    matched = ops.where(forced >= 0, forced, matched)

    positive = matched < num_gt
    boxes = ops.take(ops.concatenate([gt_boxes, ops.convert_to_tensor(BACKGROUND_BOX)], axis=0), matched, axis=0)
    labels = ops.take(ops.concatenate([gt_labels, ops.zeros((1,), "int32")], axis=0), matched, axis=0)
    encodings = ops.where(positive[:, None], encode(boxes, anchors), 0.0)
    return ops.concatenate([encodings, ops.cast(labels, "float32")[:, None]], axis=-1)


def match_batch(gt_boxes, gt_labels, anchors, iou_threshold=0.5):
    """``match`` on a padded batch: ``(B, G, 4)`` boxes, ``(B, G)`` labels -> ``(B, N, 5)``.

    Pad with zero-area boxes (all zeros, as ``padded_batch`` does): they match nothing.
    """
    checks.in_range("iou_threshold", iou_threshold, 0, 1, low_open=True, high_open=False)
    ops = tensor_ops()
    return ops.map(
        lambda image: match(image[0], image[1], anchors, iou_threshold),
        (ops.cast(gt_boxes, "float32"), ops.cast(gt_labels, "int32")),
    )
