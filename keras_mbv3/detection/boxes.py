"""The SSD box coder and IoU, on normalized corner boxes ``(ymin, xmin, ymax, xmax)``."""

import tensorflow as tf

from keras_mbv3 import checks

# torchvision's BoxCoder weights (10, 10, 5, 5): the inverse of the "variances" 0.1, 0.1, 0.2, 0.2,
# and TFLite_Detection_PostProcess's y_scale, x_scale, h_scale, w_scale.
SCALES = (10.0, 10.0, 5.0, 5.0)


def _center_size(boxes):
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    return (ymin + ymax) / 2, (xmin + xmax) / 2, ymax - ymin, xmax - xmin


def encode(boxes, anchors, scales=SCALES):
    """Encodes corner boxes against anchors, as TFLite_Detection_PostProcess decodes them.

    ``(ty, tx, th, tw) = ((cy - acy) / ah * 10, (cx - acx) / aw * 10, log(h / ah) * 5,
    log(w / aw) * 5)`` with the default ``scales``.

    Args:
        boxes: ``(..., N, 4)`` corners ``(ymin, xmin, ymax, xmax)``, normalized.
        anchors: ``(N, 4)`` ``(ycenter, xcenter, height, width)``, broadcast over the leading dims.
        scales: ``(y, x, h, w)`` scale factors.

    Returns:
        float32 ``(..., N, 4)`` encodings ``(ty, tx, th, tw)``. Boxes of zero height
        or width give -inf: encode only real (matched) boxes.
    """
    sy, sx, sh, sw = checks.positive_numbers("scales", scales, length=4)
    cy, cx, h, w = _center_size(tf.cast(boxes, tf.float32))
    acy, acx, ah, aw = tf.unstack(tf.cast(anchors, tf.float32), axis=-1)
    return tf.stack(
        [(cy - acy) / ah * sy, (cx - acx) / aw * sx, tf.math.log(h / ah) * sh, tf.math.log(w / aw) * sw], axis=-1
    )


def decode(encodings, anchors, scales=SCALES):
    """Decodes ``encode``'s encodings back to corner boxes (no clipping, no clamp, as TFLite).

    Args:
        encodings: ``(..., N, 4)`` ``(ty, tx, th, tw)``.
        anchors: ``(N, 4)`` ``(ycenter, xcenter, height, width)``, broadcast over the leading dims.
        scales: ``(y, x, h, w)`` scale factors.

    Returns:
        float32 ``(..., N, 4)`` corners ``(ymin, xmin, ymax, xmax)``, normalized.
    """
    sy, sx, sh, sw = checks.positive_numbers("scales", scales, length=4)
    ty, tx, th, tw = tf.unstack(tf.cast(encodings, tf.float32), axis=-1)
    acy, acx, ah, aw = tf.unstack(tf.cast(anchors, tf.float32), axis=-1)
    cy, cx = ty / sy * ah + acy, tx / sx * aw + acx
    half_h, half_w = tf.exp(th / sh) * ah / 2, tf.exp(tw / sw) * aw / 2
    return tf.stack([cy - half_h, cx - half_w, cy + half_h, cx + half_w], axis=-1)


def area(boxes):
    """``(...,)`` areas of ``(..., 4)`` corner boxes (0 for empty or inverted boxes)."""
    ymin, xmin, ymax, xmax = tf.unstack(tf.cast(boxes, tf.float32), axis=-1)
    return tf.maximum(ymax - ymin, 0.0) * tf.maximum(xmax - xmin, 0.0)


def iou(boxes_a, boxes_b):
    """Pairwise intersection over union of corner boxes: ``(M, 4)``, ``(N, 4)`` -> float32 ``(M, N)``.

    Pairs whose union is empty (two zero-area boxes) have IoU 0.
    """
    a = tf.cast(boxes_a, tf.float32)[:, None, :]
    b = tf.cast(boxes_b, tf.float32)[None, :, :]
    top_left = tf.maximum(a[..., :2], b[..., :2])
    bottom_right = tf.minimum(a[..., 2:], b[..., 2:])
    intersection = tf.reduce_prod(tf.maximum(bottom_right - top_left, 0.0), axis=-1)
    union = area(a) + area(b) - intersection
    return tf.math.divide_no_nan(intersection, union)
