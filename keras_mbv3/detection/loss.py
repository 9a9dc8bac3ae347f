"""The SSD loss, one Keras loss per model output: smooth L1 on the matched anchors' boxes, and softmax
cross-entropy of the matched anchors and the hard negatives.

An SSD model has two outputs, box encodings and class logits, and both losses take
the same targets of ``match``, ``(batch, N, 5)`` (box encoding, class id):

    model.compile(loss=[SSDBoxLoss(), SSDClassLoss()])
    model.fit(images, (targets, targets))

Their sum is torchvision's ``SSD.compute_loss``: both are divided by the number of
matched anchors in the whole batch (at least 1).
"""

import tensorflow as tf

from keras_mbv3 import checks
from keras_mbv3.backend import keras, register


def smooth_l1(x):
    """Elementwise smooth L1 (Huber) with beta 1."""
    x = tf.abs(x)
    return tf.where(x < 1.0, 0.5 * x * x, x - 0.5)


class _PerMatchLoss(keras.losses.Loss):
    # Keras divides the sum of the per-image values `call` returns by the batch size
    # ("sum_over_batch_size", on both Keras lines), so `call` scales them by batch / matches:
    # the reported loss is then the batch's sum / its matches, and sample weights still weight the images.
    def __init__(self, name):
        super().__init__(name=name, reduction="sum_over_batch_size")

    def call(self, y_true, y_pred):
        y_true, y_pred = tf.cast(y_true, tf.float32), tf.cast(y_pred, tf.float32)
        labels = tf.cast(y_true[..., 4], tf.int32)
        per_image = self.per_image(y_true, labels, y_pred)
        matches = tf.reduce_sum(tf.cast(labels > 0, tf.float32))
        return per_image * tf.cast(tf.shape(y_pred)[0], tf.float32) / tf.maximum(matches, 1.0)


@register
class SSDBoxLoss(_PerMatchLoss):
    """Smooth L1 (beta 1, summed over the 4 coordinates) of the matched anchors' box encodings, per match.

    ``y_true``: ``(batch, N, 5)`` targets of ``match``. ``y_pred``: ``(batch, N, 4)`` box encodings.
    """

    def __init__(self, name="box_loss"):
        super().__init__(name=name)

    def per_image(self, y_true, labels, y_pred):
        positives = tf.cast(labels > 0, tf.float32)
        return tf.reduce_sum(tf.reduce_sum(smooth_l1(y_pred - y_true[..., :4]), -1) * positives, -1)

    def get_config(self):
        return {"name": self.name}


@register
class SSDClassLoss(_PerMatchLoss):
    """Softmax cross-entropy of the matched anchors and of the hard negatives, per match.

    The hard negatives of an image are its ``neg_pos_ratio`` times as many
    unmatched anchors of the highest cross-entropy (an image without a match adds none).

    Args:
        neg_pos_ratio: hard negatives per matched anchor, per image.
        name: name of the loss.

    ``y_true``: ``(batch, N, 5)`` targets of ``match``. ``y_pred``: ``(batch, N, num_classes)``
    logits, class 0 the background.
    """

    def __init__(self, neg_pos_ratio=3, name="class_loss"):
        super().__init__(name=name)
        self.neg_pos_ratio = checks.positive_number("neg_pos_ratio", neg_pos_ratio)

    def per_image(self, y_true, labels, logits):
        positive = labels > 0
        # (batch, N); not sparse_softmax_cross_entropy_with_logits, whose shape Assert XLA warns about
        cross_entropy = -tf.reduce_sum(tf.one_hot(labels, tf.shape(logits)[-1]) * tf.nn.log_softmax(logits), -1)
        num_positive = tf.reduce_sum(tf.cast(positive, tf.float32), -1, keepdims=True)
        # The rank of each negative by descending cross-entropy (positives last); the first
        # neg_pos_ratio * positives are the hard negatives.
        negative_loss = tf.where(positive, -1.0, tf.stop_gradient(cross_entropy))
        order = tf.argsort(negative_loss, axis=-1, direction="DESCENDING", stable=True)
        rank = tf.cast(tf.argsort(order, axis=-1, stable=True), tf.float32)
        hard_negative = tf.logical_and(tf.logical_not(positive), rank < self.neg_pos_ratio * num_positive)
        return tf.reduce_sum(cross_entropy * tf.cast(tf.logical_or(positive, hard_negative), tf.float32), -1)

    def get_config(self):
        return {"neg_pos_ratio": self.neg_pos_ratio, "name": self.name}
