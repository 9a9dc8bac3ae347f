"""The SSD loss: smooth L1 on matched anchors plus softmax cross-entropy with hard negative mining."""

import tensorflow as tf

from keras_mbv3 import checks
from keras_mbv3.backend import keras, register


def smooth_l1(x):
    """Elementwise smooth L1 (Huber) with beta 1."""
    x = tf.abs(x)
    return tf.where(x < 1.0, 0.5 * x * x, x - 0.5)


@register
class SSDLoss(keras.losses.Loss):
    """The SSD loss, as torchvision's ``SSD.compute_loss``.

    Per image: ``box_weight`` times the smooth L1 (beta 1, summed over the 4
    coordinates) of the matched anchors, plus the softmax cross-entropy of the
    matched anchors and of the hard negatives: the ``neg_pos_ratio`` times as many
    unmatched anchors with the highest cross-entropy (images without a match add
    none). The batch loss is the sum over the images divided by the number of
    matched anchors in the whole batch (at least 1).

    Args:
        neg_pos_ratio: hard negatives per matched anchor, per image.
        box_weight: weight of the box term.
        name: name of the loss.

    ``y_true``: ``(batch, N, 5)`` targets of ``match``: box encoding, then class id
    (0 for background). ``y_pred``: ``(batch, N, 4 + num_classes)``: box encodings,
    then class logits (class 0 background), e.g. the concatenated outputs of the heads.
    """

    def __init__(self, neg_pos_ratio=3, box_weight=1.0, name="ssd_loss"):
        # Keras divides the sum of the per-image values `call` returns by the batch size
        # ("sum_over_batch_size", on both Keras lines), so `call` scales them by batch / matches:
        # the reported loss is then torchvision's sum / matches of the batch, and sample weights
        # still weight the images.
        super().__init__(name=name, reduction="sum_over_batch_size")
        self.neg_pos_ratio = checks.positive_number("neg_pos_ratio", neg_pos_ratio)
        self.box_weight = checks.positive_number("box_weight", box_weight)

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, tf.float32)
        y_pred = tf.cast(y_pred, tf.float32)
        labels = tf.cast(y_true[..., 4], tf.int32)
        positive = labels > 0
        positives = tf.cast(positive, tf.float32)
        box_loss = tf.reduce_sum(tf.reduce_sum(smooth_l1(y_pred[..., :4] - y_true[..., :4]), -1) * positives, -1)

        logits = y_pred[..., 4:]
        # (batch, N); not sparse_softmax_cross_entropy_with_logits, whose shape Assert XLA warns about
        cross_entropy = -tf.reduce_sum(tf.one_hot(labels, tf.shape(logits)[-1]) * tf.nn.log_softmax(logits), -1)
        num_positive = tf.reduce_sum(positives, -1, keepdims=True)
        # The rank of each negative by descending cross-entropy (positives last); the first
        # neg_pos_ratio * positives are the hard negatives.
        negative_loss = tf.where(positive, -1.0, tf.stop_gradient(cross_entropy))
        order = tf.argsort(negative_loss, axis=-1, direction="DESCENDING", stable=True)
        rank = tf.cast(tf.argsort(order, axis=-1, stable=True), tf.float32)
        hard_negative = tf.logical_and(tf.logical_not(positive), rank < self.neg_pos_ratio * num_positive)
        class_loss = tf.reduce_sum(cross_entropy * tf.cast(tf.logical_or(positive, hard_negative), tf.float32), -1)

        batch = tf.cast(tf.shape(y_pred)[0], tf.float32)
        return (self.box_weight * box_loss + class_loss) * batch / tf.maximum(tf.reduce_sum(num_positive), 1.0)

    def get_config(self):
        return {"neg_pos_ratio": self.neg_pos_ratio, "box_weight": self.box_weight, "name": self.name}
