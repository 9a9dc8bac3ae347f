"""Anchor matching: SSD training targets for one image, in pure TF ops (for a ``tf.data`` map)."""

import tensorflow as tf

from keras_mbv3 import checks
from keras_mbv3.detection.boxes import encode, iou

BACKGROUND_BOX = [[0.0, 0.0, 1.0, 1.0]]


def anchor_corners(anchors):
    """``(N, 4)`` ``(ycenter, xcenter, height, width)`` -> corners ``(ymin, xmin, ymax, xmax)``."""
    center, size = tf.split(tf.cast(anchors, tf.float32), 2, axis=-1)
    return tf.concat([center - size / 2, center + size / 2], axis=-1)


def match(gt_boxes, gt_labels, anchors, iou_threshold=0.5):
    """SSD targets of one image: the matched box encoding and class of every anchor.

    As torchvision's ``SSDMatcher``: each anchor takes the ground-truth box of
    highest IoU when that IoU is ``>= iou_threshold``; then every ground-truth box
    takes its own best anchor, even below the threshold (when two boxes share a
    best anchor, the later one keeps it). Ground-truth boxes that overlap no anchor,
    such as zero-area padding rows, match nothing. Graph-safe; any number of
    boxes, zero included.

    Args:
        gt_boxes: ``(G, 4)`` normalized corners ``(ymin, xmin, ymax, xmax)``.
        gt_labels: ``(G,)`` integer class ids, 1-based (0 is the background).
        anchors: ``(N, 4)`` ``(ycenter, xcenter, height, width)`` (``default_anchors``).
        iou_threshold: in (0, 1].

    Returns:
        float32 ``(N, 5)``: columns 0-3 the encoding (``encode``) of the matched box
        (0 for background anchors), column 4 the matched class id (0: background).
    """
    threshold = checks.in_range("iou_threshold", iou_threshold, 0, 1, low_open=True, high_open=False)
    anchors = tf.cast(anchors, tf.float32)
    num_anchors = tf.shape(anchors)[0]
    gt_boxes = tf.reshape(tf.cast(gt_boxes, tf.float32), [-1, 4])
    gt_labels = tf.reshape(tf.cast(gt_labels, tf.int32), [-1])
    num_gt = tf.shape(gt_boxes)[0]
    overlaps = iou(gt_boxes, anchor_corners(anchors))  # (G, N)

    # Row G, a sentinel of IoU -1, gives argmax a row when G = 0; anchors left on it are background.
    with_sentinel = tf.concat([overlaps, -tf.ones([1, num_anchors])], axis=0)
    best_gt = tf.argmax(with_sentinel, axis=0, output_type=tf.int32)
    matched = tf.where(tf.reduce_max(with_sentinel, axis=0) >= threshold, best_gt, num_gt)

    # Each box that overlaps some anchor takes its best one; for anchors that no box chose,
    # the segment max is the lowest int32.
    gt_ids = tf.where(tf.reduce_max(overlaps, axis=1) > 0, tf.range(num_gt), -1)
    forced = tf.math.unsorted_segment_max(gt_ids, tf.argmax(overlaps, axis=1, output_type=tf.int32), num_anchors)
    matched = tf.where(forced >= 0, forced, matched)

    positive = matched < num_gt
    boxes = tf.gather(tf.concat([gt_boxes, BACKGROUND_BOX], axis=0), matched)
    labels = tf.gather(tf.concat([gt_labels, [0]], axis=0), matched)
    encodings = tf.where(positive[:, None], encode(boxes, anchors), 0.0)
    return tf.concat([encodings, tf.cast(labels, tf.float32)[:, None]], axis=-1)


def match_batch(gt_boxes, gt_labels, anchors, iou_threshold=0.5):
    """``match`` on a padded batch: ``(B, G, 4)`` boxes, ``(B, G)`` labels -> ``(B, N, 5)``.

    Pad with zero-area boxes (all zeros, as ``padded_batch`` does): they match nothing.
    """
    checks.in_range("iou_threshold", iou_threshold, 0, 1, low_open=True, high_open=False)
    return tf.map_fn(
        lambda image: match(image[0], image[1], anchors, iou_threshold),
        (tf.cast(gt_boxes, tf.float32), tf.cast(gt_labels, tf.int32)),
        fn_output_signature=tf.float32,
    )
