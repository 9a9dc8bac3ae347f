"""Accuracy or mIoU of a ``.keras``/``.h5`` or ``.tflite`` model on a validation pipeline, and LiteRT latency."""

import contextlib
import dataclasses
import os
from typing import Callable

from keras_mbv3 import checks
from keras_mbv3.backend import keras
from keras_mbv3.quantization.litert import interleaved_latency_ms, interpreter, predict
from keras_mbv3.recipes import tasks

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


@dataclasses.dataclass
class Predictor:
    """A model file as a function ``images (N, H, W, 3) -> outputs``, with its input and output shapes."""

    path: str
    run: Callable
    input_shape: tuple  # (H, W, C)
    output_shape: tuple  # without the batch axis, e.g. (classes,) or (H, W, classes)

    def __call__(self, images):
        return self.run(images)

    @property
    def task(self):
        return task_of(self.output_shape)

    def check_fits(self, data):
        """One clear error when the model cannot be evaluated on ``data`` (task, classes or image size)."""
        expected = tasks.get(data.task).expected_output(data.classes, data.image_shape)
        if not (_fits(self.output_shape, expected) and _fits(self.input_shape, data.image_shape)):
            checks.fail("--file", self.path, f"a {describe(expected, data.image_shape)}, as --task {data.task} on "
                        f"{data.name!r} needs; this file is a {describe(self.output_shape, self.input_shape)}")  # fmt: skip


def _fits(shape, expected):
    return len(shape) == len(expected) and all(d is None or d == e for d, e in zip(shape, expected))


def describe(output_shape, input_shape):
    """``"segmentation model of 11 classes on 32x32x3 images"`` for output (32, 32, 11), input (32, 32, 3)."""
    size = "x".join("?" if d is None else str(d) for d in input_shape)
    task = task_of(output_shape)
    if task is None:
        return f"model with outputs {output_shape} on {size} images"
    return f"{tasks.get(task).MODEL_KIND} of {output_shape[-1]} classes on {size} images"


def task_of(output_shape):
    """The task of a model's output shape (without the batch axis): ``"classification"`` for ``(classes,)``,
    ``"segmentation"`` for ``(H, W, classes)``, else None."""
    return tasks.of_output(output_shape)


def _signature(detail):
    """A tensor's shape without the batch axis, None where it is dynamic (LiteRT's -1)."""
    return tuple(None if d < 0 else int(d) for d in detail["shape_signature"][1:])


def load_predictor(path):
    """The ``Predictor`` of a model file (``.keras``, ``.h5`` or ``.tflite``); a clear error for a bad file."""
    check_model_file(path)
    if path.endswith(".tflite"):
        content = open(path, "rb").read()
        try:
            runner = interpreter(content)
        except (ValueError, RuntimeError) as error:
            checks.fail("--file", path, f"a valid .tflite model ({error})")
        inputs, outputs = runner.get_input_details(), runner.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            checks.fail("--file", path, f"a model of one input and one output (this one has {len(inputs)} and "
                        f"{len(outputs)})")  # fmt: skip
        return Predictor(path, lambda images: predict(runner, images), _signature(inputs[0]), _signature(outputs[0]))
    from keras_mbv3.quantization import quantize_scope

    try:
        with quantize_scope() if path.endswith(".h5") else contextlib.nullcontext():  # .h5: a QAT model
            model = keras.models.load_model(path, compile=False)
    except (OSError, ValueError) as error:
        checks.fail("--file", path, f"a Keras model saved by keras_mbv3 ({type(error).__name__}: {error})")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        checks.fail("--file", path, f"a model of one input and one output (this one has {len(model.inputs)} and "
                    f"{len(model.outputs)})")  # fmt: skip
    return Predictor(path, lambda images: model(images, training=False).numpy(), tuple(model.input_shape[1:]),
                     tuple(model.output_shape[1:]))  # fmt: skip


def evaluate(path, data, name=None):
    """``{metric: value}`` of the model file on ``data.val``: the task's (``accuracy``, ``miou``)."""
    run = load_predictor(path)
    run.check_fits(data)
    progress = keras.utils.Progbar(data.val_size, unit_name="image")
    progress_name = name or os.path.basename(path)
    print(f"evaluating {progress_name} on {data.val_size} images")
    evaluator = tasks.get(data.task).Evaluator(data.classes)
    for images, targets in data.val.as_numpy_iterator():
        evaluator.update(run(images), targets)
        progress.add(len(images))
    return evaluator.result()


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
