"""SSD post-processing for Keras inference: TFLite_Detection_PostProcess's computation in TF ops."""

import tensorflow as tf

from keras_mbv3 import checks
from keras_mbv3.detection.boxes import decode


def decode_detections(box_encodings, class_logits, anchors, score_threshold=0.01, iou_threshold=0.55,
                      max_detections=100, max_per_class=None):  # fmt: skip
    """Detections from SSD head outputs: softmax, box decoding and per-class NMS.

    The computation of TFLite_Detection_PostProcess with ``use_regular_nms=True``
    (y/x/h/w scales 10, 10, 5, 5, ``detections_per_class=max_per_class``) fed with
    the softmax scores: each class's boxes above ``score_threshold`` go through
    NMS on their own, then the ``max_detections`` best of all classes are kept,
    best first (``tf.image.combined_non_max_suppression`` without clipping). A box
    can be detected as more than one class. Only ties differ: a score equal to
    ``score_threshold`` is dropped here (TF keeps ``>``) and kept by TFLite (``>=``),
    and equal scores may come out in another order.

    Args:
        box_encodings: ``(batch, N, 4)`` encodings ``(ty, tx, th, tw)`` (``encode``).
        class_logits: ``(batch, N, num_classes)`` logits, class 0 the background.
        anchors: ``(N, 4)`` ``(ycenter, xcenter, height, width)`` (``default_anchors``).
        score_threshold: minimum class probability, in [0, 1).
        iou_threshold: a box whose IoU with a better box of its class exceeds this
            is suppressed, in (0, 1].
        max_detections: detections kept per image.
        max_per_class: detections kept per class and image before the final
            selection; None for ``max_detections``.

    Returns:
        A dict of ``boxes`` float32 ``(batch, max_detections, 4)`` normalized corners
        ``(ymin, xmin, ymax, xmax)``, ``classes`` int32 ``(batch, max_detections)``
        0-based without the background (class id - 1, as TFLite's output), ``scores``
        float32 ``(batch, max_detections)`` and ``count`` int32 ``(batch,)``, the
        number of valid rows; the rows after them are zeros.
    """
    score_threshold = checks.in_range("score_threshold", score_threshold, 0, 1, low_open=False, high_open=True)
    iou_threshold = checks.in_range("iou_threshold", iou_threshold, 0, 1, low_open=True, high_open=False)
    max_detections = checks.positive_int("max_detections", max_detections)
    max_per_class = max_detections if max_per_class is None else checks.positive_int("max_per_class", max_per_class)
    boxes = decode(box_encodings, anchors)
    scores = tf.nn.softmax(tf.cast(class_logits, tf.float32), axis=-1)[..., 1:]
    result = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :],  # one box per anchor, shared by the classes
        scores,
        max_output_size_per_class=max_per_class,
        max_total_size=max_detections,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
        pad_per_class=False,
        clip_boxes=False,
    )
    return {
        "boxes": result.nmsed_boxes,
        "classes": tf.cast(result.nmsed_classes, tf.int32),
        "scores": result.nmsed_scores,
        "count": result.valid_detections,
    }
