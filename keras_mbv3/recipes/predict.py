"""``mbv3 predict``: a model file on image files: top-k classes with names, or segmentation overlays."""

import os

import numpy as np
import tensorflow as tf

from keras_mbv3 import checks
from keras_mbv3.recipes import tasks
from keras_mbv3.recipes.evaluation import load_predictor


def read_image(path, size):
    """An RGB image file (PNG, JPEG, GIF, BMP) as float32 ``(size[0], size[1], 3)`` in [0, 255]; one clear error."""
    if not os.path.isfile(path):
        checks.fail("IMAGE", path, "an existing image file (not found)")
    try:
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as error:
        reason = error.message.split("}}")[-1].split("[Op:")[0].strip()  # without TensorFlow's op prefix
        checks.fail("IMAGE", path, f"a PNG, JPEG, GIF or BMP image ({reason})")
    return tf.image.resize(tf.cast(image, tf.float32), size).numpy()


def labels_of(path):
    """Class names from the TFLite metadata of a ``.tflite`` file, else None."""
    if not path.endswith(".tflite"):
        return None
    from keras_mbv3.quantization import read_metadata

    metadata = read_metadata(open(path, "rb").read())
    return metadata.labels if metadata else None


def predict_files(model_path, images, top_k=5, overlays=None, overwrite=False):
    """Run ``model_path`` on ``images`` (paths): ``(task, results)``, one result dict per image, as the task gives it.

    A classifier gives ``{"image", "top": [{"class", "name", "score"}]}`` (the ``top_k`` best), a
    segmentation model ``{"image", "overlay", "classes": {name: pixel fraction}}``, a detection model
    ``{"image", "overlay", "objects": [{"class", "name", "score", "box"}]}``; their overlay PNGs (the
    image with a color per class, or with the boxes drawn) go to the folder ``overlays``.
    """
    checks.positive_int("--top-k", top_k)
    predictor = load_predictor(model_path)
    if predictor.task is None or None in predictor.input_shape[:2]:
        kinds = ", ".join(tasks.get(name).MODEL_KIND for name in tasks.NAMES)
        checks.fail("--file", model_path, f"one of these with a fixed input size: {kinds}")
    kind = tasks.get(predictor.task)
    names = labels_of(model_path) or kind.class_names(predictor.output_shapes)
    options = {"top_k": top_k, "overlays": overlays, "overwrite": overwrite}
    if kind.NEEDS_OVERLAYS and overlays is None:
        checks.fail("--overlays", overlays, f"a folder for the overlay PNGs of a {kind.MODEL_KIND}")
    batch = np.stack([read_image(path, predictor.input_shape[:2]) for path in images])  # every image checked first
    outputs = predictor(batch)
    per_image = outputs if isinstance(outputs, np.ndarray) else list(zip(*outputs))  # several outputs: a tuple each
    return predictor.task, [kind.predict(path, image, output, names, options) for path, image, output in
                            zip(images, batch, per_image)]  # fmt: skip


def describe(results, task):
    """The lines ``mbv3 predict`` prints for the ``results`` of a ``task`` model."""
    return [tasks.get(task).describe(result) for result in results]
