"""The recipe's tasks, one module each, registered under their ``--task`` name.

A task module provides what the recipe does differently per task:

- ``sources(data, image_size, data_dir, seed)``: ``(train, val, labels)``, unbatched
  ``tf.data`` pairs ``(image float32 (H, W, 3) in [0, 255], target)`` and the class names;
  ``target(label, classes)``: the model's target of a source's label; ``augment(image, target, seed)``;
- ``build_model(constructor_size, minimalistic, classes, input_shape, alpha, bn_momentum, weights)``,
  ``loss()``, ``metrics()``;
- ``expected_output(classes, image_shape)``, ``output_rank``, ``MODEL_KIND``, ``TITLE``;
- ``Evaluator(classes)`` with ``update(outputs, targets)`` and ``result()`` -> ``{METRIC: value}``;
- ``predict(path, image, output, names, options)`` (one image's result of ``mbv3 predict``) and ``describe(result)``;
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


def of_output(output_shape):
    """The name of the task whose models give ``output_shape`` (without the batch axis), else None."""
    return next((name for name in NAMES if get(name).OUTPUT_RANK == len(output_shape)), None)
