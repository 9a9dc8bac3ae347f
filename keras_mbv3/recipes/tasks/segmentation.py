"""``--task segmentation``: LR-ASPP on MobileNetV3, mean IoU."""

import numpy as np
import tensorflow as tf

from keras_mbv3.applications import LRASPPMobileNetV3Large, LRASPPMobileNetV3Small, segmentation
from keras_mbv3.backend import keras
from keras_mbv3.recipes import data as data_lib
from keras_mbv3.recipes import overlays
from keras_mbv3.recipes.tasks.base import Task


class Segmentation(Task):
    NAME = "segmentation"
    METRIC = "miou"
    MODEL_KIND = "segmentation model"
    TITLE = " LR-ASPP"
    OUTPUT_RANKS = ((3,),)  # (H, W, classes)
    CONSTRUCTORS = {"small": LRASPPMobileNetV3Small, "large": LRASPPMobileNetV3Large}
    INPUT_SIZE = segmentation.INPUT_SIZE
    NEEDS_OVERLAYS = True
    MEDIAPIPE = ("ImageSegmenter", "segment", "result.category_mask.numpy_view()", "output_category_mask=True")
    DATA_FORMS = "'digits-seg' or a folder"

    # --- data
    def embedded(self, image_size, seed):
        (train_x, train_y), (val_x, val_y) = data_lib.digits_segmentation(image_size, seed=seed)
        labels = ("background", *data_lib.DIGIT_NAMES)
        return data_lib.slices(train_x, train_y), data_lib.slices(val_x, val_y), labels

    def folder(self, path, image_size):
        return data_lib.segmentation_folder(path, image_size)

    def augment(self, image, mask, seed):
        """The image and its mask translated together."""
        both = data_lib.translate(tf.concat([image, tf.cast(mask[..., None], image.dtype)], axis=-1), seed)
        return both[..., :3], tf.cast(both[..., 3], tf.int32)

    # --- model and evaluation
    def build_model(self, size, minimalistic, classes, input_shape, alpha, bn_momentum, weights):
        """LR-ASPP; ``weights`` (``"imagenet"`` or a backbone weights file) initializes the backbone."""
        return self.CONSTRUCTORS[size](classes, input_shape=input_shape, alpha=alpha, minimalistic=minimalistic,
                                       backbone_weights=weights, bn_momentum=bn_momentum)  # fmt: skip

    def loss(self):
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def metrics(self):
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    def expected_outputs(self, classes, image_shape):
        return [((*image_shape[:2], classes),)]

    def evaluator(self, classes, image_shape):
        return IoUEvaluator(classes)

    # --- presentation
    def predict(self, path, image, output, names, options):
        """``{"image", "overlay", "classes": {name: pixel fraction}}``; the overlay PNG goes to ``options["overlays"]``."""
        classes = output.shape[-1]
        mask = output.argmax(-1)
        target = overlays.write(overlays.mask_png(image, mask, classes), path, options["overlays"], options["overwrite"])
        share = np.bincount(mask.ravel(), minlength=classes) / mask.size
        return {"image": path, "overlay": target,
                "classes": {names[i]: round(float(share[i]), 4) for i in np.flatnonzero(share)}}  # fmt: skip

    def describe(self, result):
        shares = ", ".join(f"{name} {share:.1%}" for name, share in result["classes"].items())
        return f"{result['image']}: {shares} -> {result['overlay']}"


class IoUEvaluator:
    """Mean IoU from the confusion matrix of the batches given to ``update`` (integer masks as truth)."""

    def __init__(self, classes):
        self.classes = classes
        self.confusion = np.zeros((classes, classes), np.int64)

    def update(self, outputs, targets):
        self.confusion += tf.math.confusion_matrix(targets.ravel(), outputs.argmax(-1).ravel(), self.classes,
                                                   dtype=tf.int64).numpy()  # fmt: skip

    def result(self):
        return {Segmentation.METRIC: mean_iou(self.confusion)}


def mean_iou(confusion):
    """Mean over classes present (in labels or predictions) of intersection / union."""
    intersection = np.diag(confusion).astype(float)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    present = union > 0
    return float(np.mean(intersection[present] / union[present]))
