"""The recipe's tasks: one ``Task`` subclass each (``base.Task`` lists what a task provides).

Registered under their ``--task`` name and imported when first asked for, so that
``mbv3 --help`` stays light; the names, and each task's embedded default data, are
``settings.EMBEDDED``.
"""

import functools
import importlib

from keras_mbv3 import checks
from keras_mbv3.recipes.settings import EMBEDDED, TASK_DEFAULTS, flag

NAMES = tuple(EMBEDDED)


def get(name, **options):
    """The ``Task`` of ``name`` (the ``--task`` value) with ``options`` (its ``OPTIONS``, e.g. detection's
    ``min_stride``; ``settings.TASK_DEFAULTS`` where left out): class ``Name`` of module ``tasks.name``, one instance
    per options. An option of another task is refused, naming its flag."""
    checks.one_of("--task", name, NAMES)
    own = _class(name).OPTIONS
    for key, value in options.items():
        if key not in own:
            owner = next((other for other in NAMES if key in _class(other).OPTIONS), None)
            checks.fail(flag(key), value, f"left out for --task {name}" + (f" (an option of --task {owner})"
                                                                            if owner else ""))  # fmt: skip
    return _instance(name, tuple((key, options.get(key, TASK_DEFAULTS[name][key])) for key in own))


def option_names():
    """The settings that are some task's ``OPTIONS``."""
    return tuple(key for name in NAMES for key in _class(name).OPTIONS)


def _class(name):
    return getattr(importlib.import_module(f"keras_mbv3.recipes.tasks.{name}"), name.capitalize())


@functools.lru_cache(maxsize=None)
def _instance(name, options):
    return _class(name)(**dict(options))


def options_of(name, settings):
    """The ``OPTIONS`` of task ``name`` in the run's ``settings`` (those not None)."""
    return {key: settings[key] for key in _class(name).OPTIONS if settings.get(key) is not None}


def load(data, task="classification", image_size=32, batch_size=64, data_dir=None, seed=0, holdout=0,
         repeatable=False, log=None, **options):  # fmt: skip
    """The data set named by ``data`` (the ``--data`` flag) for ``task``, as ``data.Data``.

    Args:
        data: an embedded set (``"digits"``, ``"digits-seg"``, ``"digits-det"``), ``"tfds:NAME"``
            (TensorFlow Datasets, read from ``data_dir``, never downloaded here), or a folder:
            ``train/`` and ``val/`` with one sub-folder of images per class (classification),
            ``images/`` and ``masks/`` (segmentation) or COCO files (detection). Which forms a task
            takes is its ``sources``.
        task: a ``--task`` name.
        image_size, batch_size, seed, holdout, repeatable: as ``data.pipelines``.
        log: told the options the data chose (``Task.options_by_data``), and why.
        options: the task's ``OPTIONS`` (detection's ``min_stride`` shapes its targets); those left out or None
            that the task leaves to the data are chosen from the training pairs (``Data.task`` has them).
    """
    return get(task, **options).load(data, image_size, batch_size, data_dir, seed, holdout, repeatable, log)


def of_outputs(output_shapes):
    """The name of the task whose models give outputs of ``output_shapes`` (without the batch axis), else None."""
    ranks = tuple(len(shape) for shape in output_shapes)
    return next((name for name in NAMES if ranks in get(name).OUTPUT_RANKS), None)
