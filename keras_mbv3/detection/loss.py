"""The SSD loss, one Keras loss per model output: smooth L1 on the matched anchors' boxes, and softmax
cross-entropy of the matched anchors and the hard negatives.

An SSD model has two outputs, box encodings and class logits, and both losses take
the same targets of ``match``, ``(batch, N, 5)`` (box encoding, class id):

    model.compile(loss=[SSDBoxLoss(), SSDClassLoss()])
    model.fit(images, (targets, targets))

Their sum is torchvision's ``SSD.compute_loss``: both are divided by the number of
matched anchors in the whole batch (at least 1).
"""

from keras_mbv3 import checks
from keras_mbv3.backend import keras, register
from keras_mbv3.ops import tensor_ops


def smooth_l1(ops, x):
    """Elementwise smooth L1 (Huber) with beta 1."""
    x = ops.abs(x)
    return ops.where(x < 1.0, 0.5 * x * x, x - 0.5)


class _PerMatchLoss(keras.losses.Loss):
    # Keras divides the sum of the per-image values `call` returns by the batch size
    # ("sum_over_batch_size", on both Keras lines), so `call` scales them by batch / matches:
    # the reported loss is then the batch's sum / its matches, and sample weights still weight the images.
    def __init__(self, name):
        super().__init__(name=name, reduction="sum_over_batch_size")

    def call(self, y_true, y_pred):
        ops = tensor_ops()
        y_true, y_pred = ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")
        labels = ops.cast(y_true[..., 4], "int32")
        per_image = self.per_image(ops, y_true, labels, y_pred)
        matches = ops.sum(ops.cast(labels > 0, "float32"))
        return per_image * ops.cast(ops.shape(y_pred)[0], "float32") / ops.maximum(matches, 1.0)


@register
class SSDBoxLoss(_PerMatchLoss):
    """Smooth L1 (beta 1, summed over the 4 coordinates) of the matched anchors' box encodings, per match.

    ``y_true``: ``(batch, N, 5)`` targets of ``match``. ``y_pred``: ``(batch, N, 4)`` box encodings.
    """

    def __init__(self, name="box_loss"):
        super().__init__(name=name)

    def per_image(self, ops, y_true, labels, y_pred):
        positives = ops.cast(labels > 0, "float32")
        return ops.sum(ops.sum(smooth_l1(ops, y_pred - y_true[..., :4]), -1) * positives, -1)

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

    def per_image(self, ops, y_true, labels, logits):
        positive = labels > 0
        # (batch, N); not sparse_softmax_cross_entropy_with_logits, whose shape Assert XLA warns about
        cross_entropy = -ops.sum(ops.one_hot(labels, ops.shape(logits)[-1]) * ops.log_softmax(logits), -1)
        num_positive = ops.sum(ops.cast(positive, "float32"), -1, keepdims=True)
        # The rank of each negative by descending cross-entropy (positives last; ties by index on JAX, whose
        # argsort is stable, and on TensorFlow, whose sort keeps equal values in order though Keras does not
        # ask it to); the first neg_pos_ratio * positives are the hard negatives.
        negative_loss = ops.where(positive, -1.0, ops.stop_gradient(cross_entropy))
        order = ops.argsort(-negative_loss, axis=-1)
        rank = ops.cast(ops.argsort(order, axis=-1), "float32")
        hard_negative = ops.logical_and(ops.logical_not(positive), rank < self.neg_pos_ratio * num_positive)
        return ops.sum(cross_entropy * ops.cast(ops.logical_or(positive, hard_negative), "float32"), -1)

    def get_config(self):
        return {"neg_pos_ratio": self.neg_pos_ratio, "name": self.name}
