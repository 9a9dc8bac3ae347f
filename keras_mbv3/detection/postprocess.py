"""SSD post-processing for Keras inference: TFLite_Detection_PostProcess's computation, in numpy.

numpy, so that evaluation needs no TensorFlow on any backend (it feeds pycocotools, numpy too).
"""

import numpy as np

from keras_mbv3 import checks
from keras_mbv3.backend import to_numpy
from keras_mbv3.detection.boxes import decode


def softmax(logits):
    """Softmax over the last axis, float32."""
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return (shifted / shifted.sum(-1, keepdims=True)).astype(np.float32)


def box_iou(index, others, columns, areas):
    """IoU of box ``index`` with boxes ``others`` (indices), given the boxes' ``(4, N)`` corner columns and areas.

    0 where the union is empty. Columns and areas are computed once per image: the NMS loop's time.
    """
    ymin, xmin, ymax, xmax = columns
    height = np.minimum(ymax[index], ymax[others]) - np.maximum(ymin[index], ymin[others])
    width = np.minimum(xmax[index], xmax[others]) - np.maximum(xmin[index], xmin[others])
    intersection = np.maximum(height, 0) * np.maximum(width, 0)
    union = areas[index] + areas[others] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def non_max_suppression(boxes, scores, iou_threshold, score_threshold, max_per_class, max_detections):
    """Per-class greedy NMS of one image, then the best of all classes: ``(rows, labels)`` kept, best first.

    Each class's boxes scoring above ``score_threshold`` go best first; each kept box
    suppresses the later boxes of its class whose IoU with it exceeds ``iou_threshold``;
    a class keeps at most ``max_per_class``. Taking the classes' next boxes in order of
    score until ``max_detections`` are kept gives the best ``max_detections`` of the
    per-class results without running NMS to the end (equal scores: lower class first).

    Args:
        boxes: ``(N, 4)`` corner boxes.
        scores: ``(N, classes)`` scores.
    """
    columns = np.ascontiguousarray(np.asarray(boxes, np.float32).T)
    areas = np.maximum(columns[2] - columns[0], 0) * np.maximum(columns[3] - columns[1], 0)
    queues, heads = [], np.full(scores.shape[1], -np.inf)
    for label in range(scores.shape[1]):
        candidates = np.flatnonzero(scores[:, label] > score_threshold)
        queues.append(candidates[np.argsort(-scores[candidates, label], kind="stable")])
        heads[label] = scores[queues[-1][0], label] if queues[-1].size else -np.inf
    kept_per_class = np.zeros(scores.shape[1], np.int64)
    rows, labels = [], []
    while len(rows) < max_detections and heads.size and heads.max() > -np.inf:
        label = int(np.argmax(heads))
        queue = queues[label]
        rows.append(queue[0])
        labels.append(label)
        kept_per_class[label] += 1
        rest = queue[1:] if kept_per_class[label] < max_per_class else queue[:0]
        queues[label] = rest[box_iou(queue[0], rest, columns, areas) <= iou_threshold]
        heads[label] = scores[queues[label][0], label] if queues[label].size else -np.inf
    return np.asarray(rows, np.int64), np.asarray(labels, np.int32)


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
        box_encodings: ``(batch, N, 4)`` encodings ``(ty, tx, th, tw)`` (``encode``), any backend's tensor.
        class_logits: ``(batch, N, num_classes)`` logits, class 0 the background.
        anchors: ``(N, 4)`` ``(ycenter, xcenter, height, width)`` (``default_anchors``).
        score_threshold: minimum class probability, in [0, 1).
        iou_threshold: a box whose IoU with a better box of its class exceeds this
            is suppressed, in (0, 1].
        max_detections: detections kept per image.
        max_per_class: detections kept per class and image before the final
            selection; None for ``max_detections``.

    Returns:
        A dict of numpy arrays: ``boxes`` float32 ``(batch, max_detections, 4)`` normalized corners
        ``(ymin, xmin, ymax, xmax)``, ``classes`` int32 ``(batch, max_detections)``
        0-based without the background (class id - 1, as TFLite's output), ``scores``
        float32 ``(batch, max_detections)`` and ``count`` int32 ``(batch,)``, the
        number of valid rows; the rows after them are zeros.
    """
    score_threshold = checks.in_range("score_threshold", score_threshold, 0, 1, low_open=False, high_open=True)
    iou_threshold = checks.in_range("iou_threshold", iou_threshold, 0, 1, low_open=True, high_open=False)
    max_detections = checks.positive_int("max_detections", max_detections)
    max_per_class = max_detections if max_per_class is None else checks.positive_int("max_per_class", max_per_class)
    box_encodings, class_logits = (to_numpy(x).astype(np.float32) for x in (box_encodings, class_logits))
    all_boxes = to_numpy(decode(box_encodings, np.asarray(anchors, np.float32)))
    all_scores = softmax(class_logits)[..., 1:]
    batch = len(all_boxes)
    result = {
        "boxes": np.zeros((batch, max_detections, 4), np.float32),
        "classes": np.zeros((batch, max_detections), np.int32),
        "scores": np.zeros((batch, max_detections), np.float32),
        "count": np.zeros((batch,), np.int32),
    }
    for image, (boxes, scores) in enumerate(zip(all_boxes, all_scores)):
        rows, labels = non_max_suppression(boxes, scores, iou_threshold, score_threshold, max_per_class,
                                           max_detections)  # fmt: skip
        count = len(rows)
        result["boxes"][image, :count] = boxes[rows]
        result["classes"][image, :count] = labels
        result["scores"][image, :count] = scores[rows, labels]
        result["count"][image] = count
    return result
