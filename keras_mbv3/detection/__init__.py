"""Model-agnostic SSD parts: anchors, box coder, matching, loss and post-processing.

Boxes are normalized corners ``(ymin, xmin, ymax, xmax)``; anchors are normalized
``(ycenter, xcenter, height, width)``, the format of TFLite_Detection_PostProcess.

Example::

    from keras_mbv3.detection import SSDBoxLoss, SSDClassLoss, decode_detections, default_anchors, match

    anchors = default_anchors([(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)])
    dataset = dataset.map(lambda image, boxes, labels: (image, (match(boxes, labels, anchors),) * 2))
    model.compile(optimizer="adam", loss=[SSDBoxLoss(), SSDClassLoss()])  # outputs: boxes, class logits
    box_encodings, class_logits = model.predict(images)
    detections = decode_detections(box_encodings, class_logits, anchors)
"""

from keras_mbv3.detection.anchors import anchors_per_location, default_anchors
from keras_mbv3.detection.boxes import decode, encode, iou
from keras_mbv3.detection.loss import SSDBoxLoss, SSDClassLoss
from keras_mbv3.detection.matching import match, match_batch
from keras_mbv3.detection.postprocess import decode_detections

__all__ = [
    "anchors_per_location",
    "default_anchors",
    "encode",
    "decode",
    "iou",
    "match",
    "match_batch",
    "SSDBoxLoss",
    "SSDClassLoss",
    "decode_detections",
]
