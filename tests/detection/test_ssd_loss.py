"""SSDBoxLoss + SSDClassLoss: hand values, hard negative mining, the batch normalization and a fit on the Keras line in use."""

import json
import math

import numpy as np
import pytest

from conftest import NO_XLA, backend_gradients
from keras_mbv3.backend import IS_KERAS_3, keras
from keras_mbv3.detection import SSDBoxLoss, SSDClassLoss, anchors_per_location, default_anchors, match


def reference_loss(y_true, y_pred, neg_pos_ratio=3, box_weight=1.0):
    """torchvision's SSD.compute_loss, image by image in numpy: sum over the batch / matches of the batch."""
    total, matches = 0.0, 0
    for true, pred in zip(np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)):
        labels = true[:, 4].astype(int)
        positive = labels > 0
        diff = np.abs(pred[:, :4] - true[:, :4])
        box = np.where(diff < 1, 0.5 * diff**2, diff - 0.5).sum(1)
        logits = pred[:, 4:]
        log_norm = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
        cross_entropy = log_norm - logits[np.arange(len(labels)), labels]
        negatives = np.flatnonzero(~positive)
        hard = negatives[np.argsort(-cross_entropy[negatives], kind="stable")][: neg_pos_ratio * positive.sum()]
        total += box_weight * box[positive].sum() + cross_entropy[positive].sum() + cross_entropy[hard].sum()
        matches += positive.sum()
    return total / max(1, matches)


def ssd_loss(y_true, y_pred, neg_pos_ratio=3, box_weight=1.0):
    """The two losses on the concatenated prediction (box encodings, then class logits), weighted as compile would."""
    box = SSDBoxLoss()(y_true, y_pred[..., :4])
    return float(box_weight * box + SSDClassLoss(neg_pos_ratio)(y_true, y_pred[..., 4:]))


def test_tiny_case_by_hand():
    # 4 anchors, background + 1 class; anchor 0 matched with target encoding (1, 0, 0, 0)
    y_true = np.array([[[1, 0, 0, 0, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]], np.float32)
    y_pred = np.array([[[0, 0, 0, 0.5, 0, 0],  # box: smooth L1 of 1 and 0.5 = 0.5 + 0.125
                        [9, 9, 9, 9, 0, 0],  # negatives' boxes do not count; CE log 2
                        [0, 0, 0, 0, 2, 0],  # CE log(1 + e^-2)
                        [0, 0, 0, 0, -1, 1]]], np.float32)  # CE log(1 + e^2)  # fmt: skip
    box = 0.625
    all_negatives = box + 2 * math.log(2) + math.log(1 + math.exp(-2)) + math.log(1 + math.exp(2))
    assert ssd_loss(y_true, y_pred) == pytest.approx(all_negatives, rel=1e-5)  # 3 negatives: all of them
    hardest = box + math.log(2) + math.log(1 + math.exp(2))
    assert ssd_loss(y_true, y_pred, neg_pos_ratio=1) == pytest.approx(hardest, rel=1e-5)
    assert ssd_loss(y_true, y_pred, neg_pos_ratio=1, box_weight=2) == pytest.approx(hardest + box, rel=1e-5)


def random_case(rng, positives=(3, 0, 1), anchors=24, classes=4):
    y_true = np.zeros((len(positives), anchors, 5), np.float32)
    for image, count in enumerate(positives):
        rows = rng.choice(anchors, count, replace=False)
        y_true[image, rows, :4] = rng.normal(0, 1, (count, 4))
        y_true[image, rows, 4] = rng.integers(1, classes, count)
    y_pred = rng.normal(0, 2, (len(positives), anchors, 4 + classes)).astype(np.float32)
    return y_true, y_pred


@pytest.mark.parametrize("neg_pos_ratio, box_weight", [(3, 1.0), (1, 0.5), (10, 2.0)])
def test_matches_a_numpy_reference_normalized_by_the_batch_matches(rng, neg_pos_ratio, box_weight):
    y_true, y_pred = random_case(rng)  # 3, 0 and 1 matches: the batch divides by 4, not per image
    expected = reference_loss(y_true, y_pred, neg_pos_ratio, box_weight)
    assert ssd_loss(y_true, y_pred, neg_pos_ratio, box_weight) == pytest.approx(expected, rel=1e-5)


def test_no_match_in_the_batch_gives_zero():
    y_true, y_pred = random_case(np.random.default_rng(0), positives=(0, 0))
    assert ssd_loss(y_true, y_pred) == 0.0


def class_loss_gradient(y_true, logits):
    """The gradient of SSDClassLoss with respect to the logits, by the backend in use."""
    y_true = keras.ops.convert_to_tensor(y_true) if IS_KERAS_3 else y_true  # (PyTorch's loss takes tensors only)
    (gradient,) = backend_gradients(lambda x: SSDClassLoss()(y_true, x), logits)
    return gradient


def test_hard_negative_mining_takes_the_highest_loss_negatives(rng):
    y_true, y_pred = random_case(rng, positives=(2,), anchors=16)
    used = np.any(class_loss_gradient(y_true, y_pred[..., 4:])[0] != 0, axis=-1)
    logits = y_pred[0, :, 4:]
    background_loss = np.log(np.exp(logits).sum(-1)) - logits[:, 0]
    positive = y_true[0, :, 4] > 0
    hardest = np.flatnonzero(~positive)[np.argsort(-background_loss[~positive])[:6]]
    np.testing.assert_array_equal(np.flatnonzero(used), np.sort(np.concatenate([np.flatnonzero(positive), hardest])))


@pytest.mark.parametrize("loss, arguments", [(SSDClassLoss(neg_pos_ratio=2, name="det"), {"neg_pos_ratio", "name"}),
                                             (SSDBoxLoss(name="boxes"), {"name"})])  # fmt: skip
def test_config_round_trip_and_registration(loss, arguments):
    config = loss.get_config()
    assert set(config) == arguments
    kind = type(loss)
    clone = kind.from_config(json.loads(json.dumps(config)))
    assert clone.get_config() == config
    assert keras.saving.get_registered_name(kind) == f"keras_mbv3>{kind.__name__}"
    assert isinstance(keras.losses.deserialize(keras.losses.serialize(loss)), kind)


def tiny_detector(num_classes, per_location):
    """8x8 images -> a 2x2 map -> box encodings (batch, 2 * 2 * per_location, 4) and logits (..., num_classes)."""
    image = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 4, strides=4, activation="relu")(image)
    boxes = keras.layers.Reshape((-1, 4))(keras.layers.Conv2D(per_location * 4, 1)(x))
    logits = keras.layers.Reshape((-1, num_classes))(keras.layers.Conv2D(per_location * num_classes, 1)(x))
    return keras.Model(image, [boxes, logits])


def test_fit_and_evaluate_report_the_batch_loss(rng):
    anchors = default_anchors([(2, 2)], aspect_ratios=(2,))
    model = tiny_detector(3, anchors_per_location((2,)))
    images = rng.uniform(0, 1, (4, 8, 8, 3)).astype("float32")
    boxes = [np.zeros((0, 4)), [[0.1, 0.1, 0.4, 0.5]], [[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]], [[0.2, 0.3, 0.9, 0.8]]]
    labels = [[], [1], [2, 1], [2]]
    y_true = np.stack([match(np.reshape(b, (-1, 4)), np.asarray(c, np.int32), anchors) for b, c in zip(boxes, labels)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=[SSDBoxLoss(), SSDClassLoss()], **NO_XLA)
    history = model.fit(images, (y_true, y_true), batch_size=4, epochs=3, verbose=0).history["loss"]
    assert len(history) == 3 and np.all(np.isfinite(history))
    reported = model.evaluate(images, (y_true, y_true), batch_size=4, verbose=0)[0]
    predicted = np.concatenate(model.predict(images, verbose=0), axis=-1)
    assert reported == pytest.approx(reference_loss(y_true, predicted), rel=1e-4)
