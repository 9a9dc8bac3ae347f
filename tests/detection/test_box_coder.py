"""Box encoding (TFLite_Detection_PostProcess's scales 10, 10, 5, 5), decoding and IoU."""

import math

import numpy as np

from keras_mbv3.detection import decode, encode, iou

ANCHORS = np.array([[0.5, 0.5, 0.2, 0.4], [0.5, 0.5, 0.2, 0.4]], np.float32)  # (ycenter, xcenter, h, w)


def test_encoding_by_hand():
    boxes = np.array([[0.45, 0.3, 0.65, 0.7],  # center (0.55, 0.5), size (0.2, 0.4)
                      [0.4, 0.4, 0.8, 0.5]], np.float32)  # center (0.6, 0.45), size (0.4, 0.1)  # fmt: skip
    expected = [[0.05 / 0.2 * 10, 0, 0, 0], [0.1 / 0.2 * 10, -0.05 / 0.4 * 10, math.log(2) * 5, math.log(0.25) * 5]]
    np.testing.assert_allclose(np.asarray(encode(boxes, ANCHORS)), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(encode(boxes, ANCHORS, scales=(1, 1, 1, 1)))[1],
                               [0.5, -0.125, math.log(2), math.log(0.25)], rtol=1e-5)  # fmt: skip


def test_decode_inverts_encode_with_leading_batch_dims(rng):
    anchors = np.concatenate([rng.uniform(0.2, 0.8, (5, 2)), rng.uniform(0.05, 0.5, (5, 2))], -1).astype("float32")
    corner = rng.uniform(0, 0.5, (2, 3, 5, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(0.05, 0.5, (2, 3, 5, 2))], -1).astype("float32")
    encodings = encode(boxes, anchors)
    assert tuple(encodings.shape) == (2, 3, 5, 4) and "float32" in str(encodings.dtype)
    np.testing.assert_allclose(np.asarray(decode(encodings, anchors)), boxes, atol=1e-5)


def test_zero_encoding_decodes_to_the_anchor():
    decoded = np.asarray(decode(np.zeros((1, 2, 4), "float32"), ANCHORS))
    np.testing.assert_allclose(decoded[0, 0], [0.4, 0.3, 0.6, 0.7], atol=1e-6)


def test_iou_by_hand():
    a = np.array([[0, 0, 1, 1], [0, 0, 0, 0]], np.float32)
    b = np.array([[0.5, 0.5, 1.5, 1.5], [0, 0, 1, 1], [0, 0, 0.5, 0.5], [2, 2, 3, 3]], np.float32)
    expected = [[0.25 / 1.75, 1, 0.25, 0], [0, 0, 0, 0]]  # a zero-area box has IoU 0, not NaN
    np.testing.assert_allclose(np.asarray(iou(a, b)), expected, rtol=1e-6)
    assert iou(np.zeros((0, 4), "float32"), b).shape == (0, 4)
