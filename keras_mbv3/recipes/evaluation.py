"""Accuracy or mIoU of a ``.keras``/``.h5`` or ``.tflite`` model on a validation pipeline, and LiteRT latency."""

import contextlib
import os

import numpy as np
import tensorflow as tf

from keras_mbv3 import checks
from keras_mbv3.backend import keras
from keras_mbv3.quantization.litert import interleaved_latency_ms, interpreter, predict

MODEL_EXTENSIONS = (".keras", ".h5", ".tflite")


def check_model_file(path, flag="--file", extensions=MODEL_EXTENSIONS):
    """``path`` if it is an existing, readable model file of a known kind; a clear error otherwise."""
    if not path.lower().endswith(extensions):
        checks.fail(flag, path, "a file ending in " + ", ".join(extensions))
    if not os.path.isfile(path):
        checks.fail(flag, path, "an existing model file (not found)")
    if not os.access(path, os.R_OK):
        checks.fail(flag, path, "a readable model file (permission denied)")
    return path


def load_predictor(path):
    """A function ``images (N, H, W, 3) -> outputs`` for a model file."""
    check_model_file(path)
    if path.endswith(".tflite"):
        content = open(path, "rb").read()
        try:
            runner = interpreter(content)
        except (ValueError, RuntimeError) as error:
            checks.fail("--file", path, f"a valid .tflite model ({error})")
        return lambda images: predict(runner, images)
    from keras_mbv3.quantization import quantize_scope

    try:
        with quantize_scope() if path.endswith(".h5") else contextlib.nullcontext():  # .h5: a QAT model
            model = keras.models.load_model(path, compile=False)
    except (OSError, ValueError) as error:
        checks.fail("--file", path, f"a Keras model saved by keras_mbv3 ({type(error).__name__}: {error})")
    return lambda images: model(images, training=False).numpy()


def evaluate(path, data, name=None):
    """``{"accuracy": ...}`` (classification) or ``{"miou": ...}`` (segmentation) of the model file on ``data.val``."""
    run = load_predictor(path)
    progress = keras.utils.Progbar(data.val_size, unit_name="image")
    progress_name = name or os.path.basename(path)
    print(f"evaluating {progress_name} on {data.val_size} images")
    correct, confusion = 0, np.zeros((data.classes, data.classes), np.int64)
    for images, targets in data.val.as_numpy_iterator():
        outputs = run(images)
        if data.task == "classification":
            correct += int(np.sum(outputs.argmax(-1) == targets.argmax(-1)))
        else:
            confusion += tf.math.confusion_matrix(targets.ravel(), outputs.argmax(-1).ravel(), data.classes,
                                                  dtype=tf.int64).numpy()  # fmt: skip
        progress.add(len(images))
    if data.task == "classification":
        return {"accuracy": correct / data.val_size}
    return {"miou": mean_iou(confusion)}


def mean_iou(confusion):
    """Mean over classes present (in labels or predictions) of intersection / union."""
    intersection = np.diag(confusion).astype(float)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    present = union > 0
    return float(np.mean(intersection[present] / union[present]))


def bench(paths, threads=1, rounds=15):
    """Median LiteRT latency (ms) of each ``.tflite`` in ``paths``, interleaved rounds, ``threads`` threads."""
    checks.positive_int("--threads", threads)
    for path in paths.values():
        check_model_file(path, extensions=(".tflite",))
    models = {name: open(path, "rb").read() for name, path in paths.items()}
    progress = keras.utils.Progbar(rounds, unit_name="round")
    print(f"benchmarking {', '.join(paths)} ({threads} thread(s), {rounds} interleaved rounds)")
    return interleaved_latency_ms(models, rounds=rounds, runs=10, num_threads=threads,
                                  progress=lambda: progress.add(1))  # fmt: skip
