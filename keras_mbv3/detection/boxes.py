"""The SSD box coder and IoU, on normalized corner boxes ``(ymin, xmin, ymax, xmax)``.

Backend ops (``tensor_ops``): Keras' backend, or TensorFlow inside a ``tf.data`` map.
"""

from keras_mbv3 import checks
from keras_mbv3.ops import tensor_ops

# torchvision's BoxCoder weights (10, 10, 5, 5): the inverse of the "variances" 0.1, 0.1, 0.2, 0.2,
# and TFLite_Detection_PostProcess's y_scale, x_scale, h_scale, w_scale.
SCALES = (10.0, 10.0, 5.0, 5.0)


def _columns(ops, values):
    """The four float32 columns of ``(..., 4)`` values."""
    return ops.unstack(ops.cast(values, "float32"), 4, axis=-1)


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
    ops = tensor_ops()
    ymin, xmin, ymax, xmax = _columns(ops, boxes)
    cy, cx, h, w = (ymin + ymax) / 2, (xmin + xmax) / 2, ymax - ymin, xmax - xmin
    acy, acx, ah, aw = _columns(ops, anchors)
    return ops.stack(
        [(cy - acy) / ah * sy, (cx - acx) / aw * sx, ops.log(h / ah) * sh, ops.log(w / aw) * sw], axis=-1
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
    ops = tensor_ops()
    ty, tx, th, tw = _columns(ops, encodings)
    acy, acx, ah, aw = _columns(ops, anchors)
    cy, cx = ty / sy * ah + acy, tx / sx * aw + acx
    half_h, half_w = ops.exp(th / sh) * ah / 2, ops.exp(tw / sw) * aw / 2
    return ops.stack([cy - half_h, cx - half_w, cy + half_h, cx + half_w], axis=-1)


def area(boxes):
    """``(...,)`` areas of ``(..., 4)`` corner boxes (0 for empty or inverted boxes)."""
    ops = tensor_ops()
    ymin, xmin, ymax, xmax = _columns(ops, boxes)
    return ops.maximum(ymax - ymin, 0.0) * ops.maximum(xmax - xmin, 0.0)


def iou(boxes_a, boxes_b):
    """Pairwise intersection over union of corner boxes: ``(M, 4)``, ``(N, 4)`` -> float32 ``(M, N)``.

    Pairs whose union is empty (two zero-area boxes) have IoU 0.
    """
    ops = tensor_ops()
    a = ops.cast(boxes_a, "float32")[:, None, :]
    b = ops.cast(boxes_b, "float32")[None, :, :]
    top_left = ops.maximum(a[..., :2], b[..., :2])
    bottom_right = ops.minimum(a[..., 2:], b[..., 2:])
    intersection = ops.prod(ops.maximum(bottom_right - top_left, 0.0), axis=-1)
    union = area(a) + area(b) - intersection
    return ops.divide_no_nan(intersection, union)
