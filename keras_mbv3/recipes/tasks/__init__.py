"""The recipe's tasks, one module each, registered under their ``--task`` name.

A task module provides what the recipe does differently per task:

- ``sources(data, image_size, data_dir, seed)``: ``(train, val, labels)``, unbatched
  ``tf.data`` pairs ``(image float32 (H, W, 3) in [0, 255], label)`` and the class names;
  ``augment(image, label, seed)`` (training); ``target(label, classes, image_shape)``: the model's
  training target; ``truth(label, classes)``: what the evaluator compares with;
- ``build_model(constructor_size, minimalistic, classes, input_shape, alpha, bn_momentum, weights)``,
  ``loss()``, ``metrics()``;
- ``expected_outputs(classes, image_shape)``: the output shapes of its model files (one tuple
  of shapes per form, e.g. Keras and ``.tflite``), ``OUTPUT_RANKS`` (their ranks, which tell
  a file's task), ``describe_model(output_shapes)``, ``class_names(output_shapes)``, ``MODEL_KIND``,
  ``TITLE``, ``CURVE`` (the report's training curve);
- ``Evaluator(classes, image_shape)`` with ``update(outputs, targets)`` and ``result()`` -> ``{METRIC: value}``;
- ``predict(path, image, output, names, options)`` (one image's result of ``mbv3 predict``) and ``describe(result)``;
- ``INPUT_SIZE``: its application's ``applications.sizes.SizeRule`` (``--image-size`` is checked against it), ``export_options(image_shape)`` (more ``export_tflite`` arguments) and ``metadata_labels(labels)``;
- ``MEDIAPIPE``: the MediaPipe Tasks class, method, result and option of the report's snippet.

Modules are imported when first asked for, so that ``mbv3 --help`` stays light; the
names, and each task's embedded default data, are ``settings.EMBEDDED``.
"""

import importlib

from keras_mbv3 import checks
from keras_mbv3.recipes.settings import EMBEDDED

NAMES = tuple(EMBEDDED)


def get(name):
    """The module of the task ``name`` (the ``--task`` value)."""
    checks.one_of("--task", name, NAMES)
    return importlib.import_module(f"keras_mbv3.recipes.tasks.{name}")


def of_outputs(output_shapes):
    """The name of the task whose models give outputs of ``output_shapes`` (without the batch axis), else None."""
    ranks = tuple(len(shape) for shape in output_shapes)
    return next((name for name in NAMES if ranks in get(name).OUTPUT_RANKS), None)
