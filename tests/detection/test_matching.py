"""Anchor matching: threshold, forced best anchors, background, zero boxes, graph mode in tf.data."""

import math

import numpy as np
import tensorflow as tf

from keras_mbv3.detection import decode, default_anchors, iou, match, match_batch

# four quadrants and the whole image, (ycenter, xcenter, height, width)
ANCHORS = np.array([[0.25, 0.25, 0.5, 0.5], [0.25, 0.75, 0.5, 0.5], [0.75, 0.25, 0.5, 0.5],
                    [0.75, 0.75, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]], np.float32)  # fmt: skip
BOXES = np.array([[0, 0, 0.5, 0.4],  # IoU 0.8 with anchor 0
                  [0.5, 0.5, 0.8, 0.8],  # best: anchor 3, IoU 0.36 only
                  [0.1, 0.1, 0.9, 0.9]], np.float32)  # IoU 0.64 with anchor 4, 0.22 with each quadrant  # fmt: skip
LABELS = np.array([3, 1, 2], np.int32)


def labels_of(targets):
    return np.asarray(targets)[:, 4].astype(int).tolist()


def test_targets_by_hand():
    targets = np.asarray(match(BOXES, LABELS, ANCHORS))
    assert targets.shape == (5, 5) and targets.dtype == np.float32
    assert labels_of(targets) == [3, 0, 0, 1, 2]  # anchor 3 forced to box 1 below the threshold
    log08, log06 = math.log(0.8) * 5, math.log(0.6) * 5
    expected = [[0, -1, 0, log08], [0, 0, 0, 0], [0, 0, 0, 0], [-2, -2, log06, log06], [0, 0, log08, log08]]
    np.testing.assert_allclose(targets[:, :4], expected, rtol=1e-5, atol=1e-5)


def test_threshold_decides_the_other_anchors():
    assert labels_of(match(BOXES, LABELS, ANCHORS, iou_threshold=0.2)) == [3, 2, 2, 1, 2]
    assert labels_of(match(BOXES, LABELS, ANCHORS, iou_threshold=1.0)) == [3, 0, 0, 1, 2]  # forced ones only


def test_forced_best_anchor_beats_a_higher_iou():
    small = [0, 0, 0.2, 0.2]  # its best anchor is 0, IoU 0.16
    large = [0, 0, 0.75, 0.75]  # IoU 0.44 with anchor 0, best anchor 4
    targets = match(np.array([small, large], np.float32), [5, 7], ANCHORS, iou_threshold=0.4)
    assert labels_of(targets) == [5, 0, 0, 0, 7]


def test_two_boxes_with_one_best_anchor_the_later_keeps_it():
    first, second = [0, 0, 0.4, 0.4], [0.1, 0.1, 0.5, 0.5]  # both: IoU 0.64 with anchor 0, 0.16 with anchor 4
    assert labels_of(match(np.array([first, second], np.float32), [1, 2], ANCHORS)) == [2, 0, 0, 0, 0]
    assert labels_of(match(np.array([second, first], np.float32), [2, 1], ANCHORS)) == [1, 0, 0, 0, 0]


def test_no_boxes_and_zero_area_padding_give_background():
    empty = np.asarray(match(np.zeros((0, 4), np.float32), np.zeros((0,), np.int32), ANCHORS))
    np.testing.assert_array_equal(empty, np.zeros((5, 5)))
    padded = match(np.concatenate([BOXES, np.zeros((2, 4), np.float32)]), [3, 1, 2, 0, 0], ANCHORS)
    np.testing.assert_array_equal(np.asarray(padded), np.asarray(match(BOXES, LABELS, ANCHORS)))


def test_every_box_gets_its_best_anchor_and_positives_decode_to_their_box(rng):
    anchors = default_anchors([(4, 4), (2, 2), (1, 1)])
    corner = rng.uniform(0, 0.7, (6, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(0.05, 0.3, (6, 2))], -1).astype("float32")
    labels = np.arange(1, 7)
    targets = np.asarray(match(boxes, labels, anchors))
    positive = targets[:, 4] > 0
    corners = np.concatenate([anchors[:, :2] - anchors[:, 2:] / 2, anchors[:, :2] + anchors[:, 2:] / 2], -1)
    best = np.argmax(np.asarray(iou(boxes, corners)), axis=1)
    owner = {anchor: label for anchor, label in zip(best, labels)}  # a shared best anchor goes to the later box
    assert {a: int(targets[a, 4]) for a in owner} == owner
    decoded = np.asarray(decode(targets[positive, :4], anchors[positive]))
    np.testing.assert_allclose(decoded, boxes[targets[positive, 4].astype(int) - 1], atol=1e-5)
    np.testing.assert_array_equal(targets[~positive, :4], 0)


def test_graph_mode_in_a_tf_data_map_with_any_number_of_boxes():
    images = [(BOXES[:0], LABELS[:0]), (BOXES[:1], LABELS[:1]), (BOXES, LABELS)]
    dataset = tf.data.Dataset.from_generator(
        lambda: iter(images),
        output_signature=(tf.TensorSpec((None, 4), tf.float32), tf.TensorSpec((None,), tf.int32)),
    ).map(lambda boxes, labels: match(boxes, labels, ANCHORS))
    results = list(dataset.as_numpy_iterator())
    assert results[0].shape == (5, 5)
    for (boxes, labels), result in zip(images, results):
        np.testing.assert_array_equal(result, np.asarray(match(boxes, labels, ANCHORS)))


def test_match_batch_on_a_padded_batch():
    boxes = np.zeros((2, 3, 4), np.float32)
    labels = np.zeros((2, 3), np.int32)
    boxes[0], labels[0] = BOXES, LABELS
    boxes[1, :1], labels[1, :1] = BOXES[1:2], LABELS[1:2]
    targets = np.asarray(match_batch(boxes, labels, ANCHORS))
    assert targets.shape == (2, 5, 5)
    np.testing.assert_array_equal(targets[0], np.asarray(match(BOXES, LABELS, ANCHORS)))
    np.testing.assert_array_equal(targets[1], np.asarray(match(BOXES[1:2], LABELS[1:2], ANCHORS)))
