"""``--task segmentation``: LR-ASPP on MobileNetV3, mean IoU."""

import os

import numpy as np
import tensorflow as tf

from keras_mbv3 import checks
from keras_mbv3.applications import LRASPPMobileNetV3Large, LRASPPMobileNetV3Small, segmentation
from keras_mbv3.backend import keras
from keras_mbv3.files import write_atomically
from keras_mbv3.recipes import data as data_lib
from keras_mbv3.recipes.tasks.plain import export_options, metadata_labels  # noqa: F401 (hooks)

METRIC = "miou"
MODEL_KIND = "segmentation model"
CURVE = "accuracy"  # the training curve of the report
TITLE = " LR-ASPP"
OUTPUT_RANKS = ((3,),)  # (H, W, classes)
CONSTRUCTORS = {"small": LRASPPMobileNetV3Small, "large": LRASPPMobileNetV3Large}
INPUT_SIZE = segmentation.INPUT_SIZE
NEEDS_OVERLAYS = True  # mbv3 predict writes an overlay PNG per image
MEDIAPIPE = ("ImageSegmenter", "segment", "result.category_mask.numpy_view()", "output_category_mask=True")


def sources(data, image_size, data_dir, seed):
    if data == "digits-seg":
        (train_x, train_y), (val_x, val_y) = data_lib.digits_segmentation(image_size, seed=seed)
        labels = ("background", *data_lib.DIGIT_NAMES)
        return data_lib.slices(train_x, train_y), data_lib.slices(val_x, val_y), labels
    if data in data_lib.EMBEDDED_SETS or data.startswith("tfds:"):
        checks.fail("--data", data, "for --task segmentation: 'digits-seg' or a folder")
    return data_lib.segmentation_folder(data, image_size)


def target(mask, classes, image_shape):
    return mask


def augment(image, mask, seed):
    both = data_lib.translate(tf.concat([image, tf.cast(mask[..., None], image.dtype)], axis=-1), seed)
    return both[..., :3], tf.cast(both[..., 3], tf.int32)


def build_model(size, minimalistic, classes, input_shape, alpha, bn_momentum, weights):
    """LR-ASPP; ``weights`` (``"imagenet"`` or a backbone weights file) initializes the backbone."""
    return CONSTRUCTORS[size](classes, input_shape=input_shape, alpha=alpha, minimalistic=minimalistic,
                              backbone_weights=weights, bn_momentum=bn_momentum)  # fmt: skip


def loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def metrics():
    return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]


def truth(label, classes):
    """What ``Evaluator.update`` compares the outputs with: the training target."""
    return target(label, classes, None)


def expected_outputs(classes, image_shape):
    return [((*image_shape[:2], classes),)]


def describe_model(output_shapes):
    return f"{MODEL_KIND} of {output_shapes[0][-1]} classes"


class Evaluator:
    """Mean IoU from the confusion matrix of the batches given to ``update``."""

    def __init__(self, classes, image_shape):
        self.classes = classes
        self.confusion = np.zeros((classes, classes), np.int64)

    def update(self, outputs, targets):
        self.confusion += tf.math.confusion_matrix(targets.ravel(), outputs.argmax(-1).ravel(), self.classes,
                                                   dtype=tf.int64).numpy()  # fmt: skip

    def result(self):
        return {METRIC: mean_iou(self.confusion)}


def mean_iou(confusion):
    """Mean over classes present (in labels or predictions) of intersection / union."""
    intersection = np.diag(confusion).astype(float)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    present = union > 0
    return float(np.mean(intersection[present] / union[present]))


def class_names(output_shapes):
    """Names for a file without metadata: the class indices."""
    return tuple(str(i) for i in range(output_shapes[0][-1]))


def predict(path, image, output, names, options):
    """``{"image", "overlay", "classes": {name: pixel fraction}}``; the overlay PNG goes to ``options["overlays"]``."""
    classes = output.shape[-1]
    mask = output.argmax(-1)
    target = os.path.join(options["overlays"], os.path.splitext(os.path.basename(path))[0] + ".overlay.png")
    os.makedirs(options["overlays"], exist_ok=True)
    write_atomically(overlay_png(image, mask, classes), target, options["overwrite"])
    share = np.bincount(mask.ravel(), minlength=classes) / mask.size
    return {"image": path, "overlay": target,
            "classes": {names[i]: round(float(share[i]), 4) for i in np.flatnonzero(share)}}  # fmt: skip


def overlay_png(image, mask, classes):
    """PNG bytes of ``image`` half-blended with a color per class of ``mask`` (class 0 left clear)."""
    from matplotlib import colormaps

    palette = (colormaps["tab20"](np.arange(classes) % 20)[:, :3] * 255).astype(np.float32)
    colored = np.where(mask[..., None] > 0, 0.5 * image + 0.5 * palette[mask], image)
    return tf.io.encode_png(np.clip(np.round(colored), 0, 255).astype(np.uint8)).numpy()


def describe(result):
    shares = ", ".join(f"{name} {share:.1%}" for name, share in result["classes"].items())
    return f"{result['image']}: {shares} -> {result['overlay']}"
