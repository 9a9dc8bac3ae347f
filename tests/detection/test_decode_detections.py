"""decode_detections: per-class NMS, classes without background, score threshold, padding."""

import numpy as np
import pytest

from keras_mbv3.detection import decode_detections

# (ycenter, xcenter, height, width): anchors 0 and 1 overlap (IoU 0.82), anchor 2 is apart
ANCHORS = np.array([[0.3, 0.3, 0.2, 0.2], [0.31, 0.31, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]], np.float32)
CORNERS = np.concatenate([ANCHORS[:, :2] - ANCHORS[:, 2:] / 2, ANCHORS[:, :2] + ANCHORS[:, 2:] / 2], -1)


def detect(probabilities, **options):
    """Detections of one image whose box encodings are zero (boxes = anchors) and whose softmax is ``probabilities``."""
    logits = np.log(np.asarray(probabilities, np.float32))[None]
    result = decode_detections(np.zeros((1, len(ANCHORS), 4), np.float32), logits, ANCHORS, **options)
    return {key: value[0] for key, value in result.items()}


def test_overlapping_boxes_of_one_class_keep_the_best_and_other_classes_stay():
    # columns: background, class id 1, class id 2
    result = detect([[0.1, 0.85, 0.05], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]], score_threshold=0.3, max_detections=5)
    assert result["count"] == 2
    assert result["classes"][:2].tolist() == [0, 1]  # class id - 1
    np.testing.assert_allclose(result["scores"][:2], [0.85, 0.8], rtol=1e-5)
    np.testing.assert_allclose(result["boxes"][:2], CORNERS[[0, 2]], atol=1e-6)
    assert result["boxes"].shape == (5, 4) and result["classes"].dtype == np.int32
    np.testing.assert_array_equal(result["scores"][2:], 0)


def test_overlapping_boxes_of_different_classes_are_both_kept():
    result = detect([[0.1, 0.8, 0.1], [0.2, 0.1, 0.7], [0.9, 0.05, 0.05]], score_threshold=0.3)
    assert result["count"] == 2 and result["classes"][:2].tolist() == [0, 1]
    np.testing.assert_allclose(result["boxes"][:2], CORNERS[[0, 1]], atol=1e-6)
    assert result["boxes"].shape == (100, 4)


def test_nms_threshold_above_the_overlap_keeps_both():
    result = detect([[0.1, 0.85, 0.05], [0.2, 0.7, 0.1], [0.9, 0.05, 0.05]], score_threshold=0.3, iou_threshold=0.9)
    assert result["count"] == 2 and result["classes"][:2].tolist() == [0, 0]


def test_score_threshold_and_max_detections():
    probabilities = [[0.1, 0.5, 0.4], [0.3, 0.05, 0.65], [0.05, 0.9, 0.05]]
    # after NMS: class id 1 keeps anchors 2 (0.9) and 0 (0.5), class id 2 anchors 1 (0.65) and 2 (0.05)
    scores = detect(probabilities, score_threshold=0.01)["scores"]
    assert scores[:5].tolist() == pytest.approx([0.9, 0.65, 0.5, 0.05, 0])
    assert detect(probabilities, score_threshold=0.45)["count"] == 3
    assert detect(probabilities, score_threshold=0.6)["count"] == 2
    best = detect(probabilities, score_threshold=0.01, max_detections=2)
    assert best["count"] == 2 and best["scores"].tolist() == pytest.approx([0.9, 0.65])
    per_class = detect(probabilities, score_threshold=0.01, max_per_class=1)
    assert per_class["count"] == 2 and per_class["scores"][:2].tolist() == pytest.approx([0.9, 0.65])


def test_images_of_a_batch_are_independent():
    logits = np.log(np.array([[[0.1, 0.9, 0.0001]] * 3, [[0.99, 0.005, 0.005]] * 3], np.float32))
    result = decode_detections(np.zeros((2, 3, 4), np.float32), logits, ANCHORS, score_threshold=0.5)
    assert result["count"].tolist() == [2, 0]  # anchors 0 and 2 (1 suppressed by 0); nothing


@pytest.mark.parametrize("max_per_class", [None, 3])
def test_equals_tensorflows_combined_non_max_suppression_on_random_boxes(max_per_class):
    """Our numpy NMS against the TensorFlow op it replaces (TensorFlow is installed on every line)."""
    import tensorflow as tf

    from keras_mbv3.detection import decode, default_anchors

    rng = np.random.default_rng(7)
    anchors = default_anchors([(4, 4), (2, 2)])
    encodings = rng.normal(0, 1, (3, len(anchors), 4)).astype(np.float32)
    logits = rng.normal(0, 2, (3, len(anchors), 5)).astype(np.float32)
    ours = decode_detections(encodings, logits, anchors, score_threshold=0.2, iou_threshold=0.5, max_detections=20,
                             max_per_class=max_per_class)  # fmt: skip
    theirs = tf.image.combined_non_max_suppression(
        np.asarray(decode(encodings, anchors))[:, :, None, :], tf.nn.softmax(logits)[..., 1:],
        max_output_size_per_class=max_per_class or 20, max_total_size=20, iou_threshold=0.5, score_threshold=0.2,
        clip_boxes=False)  # fmt: skip
    assert ours["count"].tolist() == theirs.valid_detections.numpy().tolist() and ours["count"].min() > 3
    np.testing.assert_allclose(ours["scores"], theirs.nmsed_scores.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(ours["classes"], theirs.nmsed_classes.numpy())
    np.testing.assert_allclose(ours["boxes"], theirs.nmsed_boxes.numpy(), atol=1e-6)
