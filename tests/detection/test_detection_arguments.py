"""Bad calls of keras_mbv3.detection raise naming the argument, the value and what is allowed."""

import numpy as np
import pytest

from conftest import assert_clear_error
from keras_mbv3.detection import (
    SSDClassLoss,
    anchors_per_location,
    decode,
    decode_detections,
    default_anchors,
    encode,
    match,
    match_batch,
)

ANCHORS = np.array([[0.5, 0.5, 1, 1]], np.float32)
BOX = np.array([[0, 0, 1, 1]], np.float32)
SCORES = np.zeros((1, 1, 2), np.float32)

# (call, error, argument, value or None when the value has no short repr)
BAD = [
    (lambda: default_anchors([]), ValueError, "feature_sizes", []),
    (lambda: default_anchors([(2, 0)]), ValueError, "feature_sizes", [(2, 0)]),
    (lambda: default_anchors([(2,)]), ValueError, "feature_sizes", [(2,)]),
    (lambda: default_anchors([(2, 2.0)]), ValueError, "feature_sizes", [(2, 2.0)]),
    (lambda: default_anchors([(2, 2)], min_scale=0), ValueError, "min_scale", 0),
    (lambda: default_anchors([(2, 2)], max_scale=1.5), ValueError, "max_scale", 1.5),
    (lambda: default_anchors([(2, 2)], min_scale=0.5, max_scale=0.4), ValueError, "max_scale", 0.4),
    (lambda: default_anchors([(2, 2)], min_scale="0.2"), TypeError, "min_scale", "0.2"),
    (lambda: default_anchors([(2, 2)], aspect_ratios=(2, 0)), ValueError, "aspect_ratios", (2, 0)),
    (lambda: default_anchors([(2, 2)], aspect_ratios=2), ValueError, "aspect_ratios", 2),
    (lambda: default_anchors([(2, 2)], clip="yes"), TypeError, "clip", "yes"),
    (lambda: anchors_per_location((-1,)), ValueError, "aspect_ratios", (-1,)),
    (lambda: encode(BOX, ANCHORS, scales=(10, 10, 5)), ValueError, "scales", (10, 10, 5)),
    (lambda: decode(BOX, ANCHORS, scales=(10, 10, 5, 0)), ValueError, "scales", (10, 10, 5, 0)),
    (lambda: match(BOX, [1], ANCHORS, iou_threshold=0), ValueError, "iou_threshold", 0),
    (lambda: match_batch(BOX[None], [[1]], ANCHORS, iou_threshold=1.5), ValueError, "iou_threshold", 1.5),
    (lambda: SSDClassLoss(neg_pos_ratio=0), ValueError, "neg_pos_ratio", 0),
    (lambda: SSDClassLoss(neg_pos_ratio="3"), TypeError, "neg_pos_ratio", "3"),
    (lambda: decode_detections(BOX[None], SCORES, ANCHORS, score_threshold=1.0), ValueError, "score_threshold", 1.0),
    (lambda: decode_detections(BOX[None], SCORES, ANCHORS, iou_threshold=0.0), ValueError, "iou_threshold", 0.0),
    (lambda: decode_detections(BOX[None], SCORES, ANCHORS, max_detections=0), ValueError, "max_detections", 0),
    (lambda: decode_detections(BOX[None], SCORES, ANCHORS, max_per_class=2.5), TypeError, "max_per_class", 2.5),
]


@pytest.mark.parametrize("call, error, argument, value", BAD, ids=[f"{a}={v!r}" for _, _, a, v in BAD])
def test_bad_call_names_argument_value_and_what_is_allowed(call, error, argument, value):
    assert_clear_error(call, error, argument, value)
