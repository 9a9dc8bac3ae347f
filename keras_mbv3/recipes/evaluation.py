"""Accuracy or mIoU of a ``.keras``/``.h5`` or ``.tflite`` model on a validation pipeline, and LiteRT latency."""

import contextlib
import dataclasses
import os
from typing import Callable

import numpy as np

from keras_mbv3 import checks
from keras_mbv3.backend import IS_KERAS_3, keras, to_numpy
from keras_mbv3.quantization.litert import interleaved_latency_ms, interpreter, predict_outputs
from keras_mbv3.recipes import tasks
from keras_mbv3.recipes.settings import flag as flag_of

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
    """A model file as a function ``images (N, H, W, 3) -> outputs``, with its input and output shapes.

    The outputs are an array for a one-output model, else a list of arrays in the model's order.
    """

    path: str
    run: Callable
    input_shape: tuple  # (H, W, C)
    output_shapes: tuple  # one shape per output, without the batch axis, e.g. ((classes,),)

    def __call__(self, images):
        return self.run(images)

    @property
    def task(self):
        return tasks.of_outputs(self.output_shapes)

    def check_fits(self, data, flag="--file"):
        """One clear error when the model cannot be evaluated on ``data`` (task, classes or image size)."""
        forms = data.task.expected_outputs(data.classes, data.image_shape)
        if not (any(_fits_all(self.output_shapes, form) for form in forms) and _fits(self.input_shape, data.image_shape)):
            options = "".join(f" {flag_of(name)} {getattr(data.task, name)}" for name in data.task.OPTIONS)
            checks.fail(flag, self.path, f"a {describe(forms[0], data.image_shape)}, as --task {data.task.NAME}"
                        f"{options} on {data.name!r} needs; this file is a "
                        f"{describe(self.output_shapes, self.input_shape)}")  # fmt: skip


def _fits(shape, expected):
    return len(shape) == len(expected) and all(d is None or e is None or d == e for d, e in zip(shape, expected))


def _fits_all(shapes, expected):
    return len(shapes) == len(expected) and all(_fits(s, e) for s, e in zip(shapes, expected))


def describe(output_shapes, input_shape):
    """``"segmentation model of 11 classes on 32x32x3 images"`` for outputs ((32, 32, 11),), input (32, 32, 3)."""
    size = "x".join("?" if d is None else str(d) for d in input_shape)
    task = tasks.of_outputs(output_shapes)
    if task is None:
        shapes = ", ".join(str(tuple(s)) for s in output_shapes)
        return f"model with output{'s' if len(output_shapes) > 1 else ''} {shapes} on {size} images"
    return f"{tasks.get(task).describe_model(output_shapes)} on {size} images"


def _signature(detail):
    """A tensor's shape without the batch axis, None where it is dynamic (LiteRT's -1)."""
    return tuple(None if d < 0 else int(d) for d in detail["shape_signature"][1:])


def _one_or_list(outputs):
    return outputs[0] if len(outputs) == 1 else outputs


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
        if len(inputs) != 1:
            checks.fail("--file", path, f"a model of one input (this one has {len(inputs)})")
        return Predictor(path, lambda images: _one_or_list(predict_outputs(runner, images)), _signature(inputs[0]),
                         tuple(_signature(o) for o in outputs))  # fmt: skip
    return keras_predictor(load_keras_model(path), path)


def load_keras_model(path, flag="--file"):
    """The one-input Keras model in ``path`` (``.keras``, or ``.h5``: a whole model, QAT ones too); a clear error."""
    from keras_mbv3.quantization import quantize_scope

    check_model_file(path, flag, (".keras", ".h5"))
    try:
        with quantize_scope() if path.endswith(".h5") else contextlib.nullcontext():  # .h5: a QAT model
            model = keras.models.load_model(path, compile=False)
    except (OSError, ValueError, TypeError) as error:
        if IS_KERAS_3 and path.endswith(".h5") and _is_tf_keras_2_h5(path):
            checks.fail(flag, path, "on Keras 3, a .keras file; this .h5 was saved by tf.keras 2 (its layer names "
                        "hold '/' and Keras 3 cannot read its TFOpLambda layers): import it on the tf_keras line "
                        "(TF_USE_LEGACY_KERAS=1, keras-mbv3[tfmot]), where the run then continues")  # fmt: skip
        checks.fail(flag, path, f"a whole Keras model file of this Keras line ({type(error).__name__}: {error})")
    if not isinstance(model, keras.Model):
        checks.fail(flag, path, "a whole Keras model file (this one holds weights only)")
    if len(model.inputs) != 1:
        checks.fail(flag, path, f"a model of one input (this one has {len(model.inputs)})")
    return model


def _is_tf_keras_2_h5(path):
    """Whether the whole-model ``.h5`` at ``path`` was written by tf.keras 2 (its ``keras_version`` 2.x)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            version = f.attrs.get("keras_version", b"")
    except OSError:
        return False
    return (version.decode() if isinstance(version, bytes) else str(version)).startswith("2.")


def keras_predictor(model, path):
    """The ``Predictor`` of a loaded Keras ``model`` (from ``path``)."""

    def run(images):
        outputs = model(images, training=False)
        return _one_or_list([to_numpy(o) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])])

    return Predictor(path, run, tuple(model.input_shape[1:]), tuple(tuple(o.shape[1:]) for o in model.outputs))


def settings_of_files(paths, flag="--file"):
    """``{"task", "image_size"}`` (and the task's options the files tell, e.g. ``min_stride``) that the model files share (what ``mbv3 eval FILE...`` assumes unless told)."""
    found = {}
    for path in paths:
        predictor = load_predictor(path) if path.endswith(".tflite") else keras_predictor(load_keras_model(path, flag), path)
        height, width = predictor.input_shape[:2]
        own = {"task": predictor.task, "image_size": height if height is not None and height == width else None}
        if predictor.task is not None:
            own.update(tasks.get(predictor.task).options_of_model(predictor.input_shape, predictor.output_shapes))
        for name, value in own.items():
            if value is not None and found.setdefault(name, value) != value:
                checks.fail(flag, path, f"a model of the same {name} as the other files ({found[name]}, not "
                            f"{value}), or --{name.replace('_', '-')} given")  # fmt: skip
    return found


def evaluate(path, data, name=None):
    """``{metric: value}`` of the model file on ``data.val``: the task's (``accuracy``, ``miou``)."""
    run = load_predictor(path)
    run.check_fits(data)
    progress = keras.utils.Progbar(data.val_size, unit_name="image")
    progress_name = name or os.path.basename(path)
    print(f"evaluating {progress_name} on {data.val_size} images")
    evaluator = data.task.evaluator(data.classes, data.image_shape)
    for images, truth in data.evaluation.as_numpy_iterator():
        evaluator.update(run(images), truth)
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
