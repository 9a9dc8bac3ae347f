"""Float training and QAT fine-tuning with Keras callbacks, resumable and distributable.

A run folder holds each step's result (``float.keras``, ``qat.keras``) written
whole, its per-epoch log (``*_history.csv``) and, while the step runs, a
``BackupAndRestore`` folder: a run killed at any point resumes from its last
finished epoch when started again with the same folder.
"""

import contextlib
import csv
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from keras_mbv3 import checks
from keras_mbv3.backend import IS_KERAS_3, keras
from keras_mbv3.recipes import tasks

MODELS = {  # --model: (size, minimalistic); each task builds its own model of that backbone
    "small": ("small", False),
    "large": ("large", False),
    "small-minimalistic": ("small", True),
    "large-minimalistic": ("large", True),
}
STRATEGIES = ("default", "mirrored", "multi-worker")
WEIGHT_DECAY = 1e-5  # the paper's


class OneDevice:
    """The default placement on a backend other than TensorFlow: what the recipe asks of a strategy."""

    num_replicas_in_sync = 1
    cluster_resolver = None

    def scope(self):
        return contextlib.nullcontext()


def backend_name():
    """The Keras backend: ``"tensorflow"`` on tf_keras, else Keras 3's (``"jax"``, ``"torch"``, ...)."""
    return keras.backend.backend() if IS_KERAS_3 else "tensorflow"


def strategy(name, cpu_devices=1):
    """The ``tf.distribute`` strategy for ``--strategy`` (call before TensorFlow creates its devices).

    ``cpu_devices`` > 1 splits the CPU into that many logical devices, so that
    ``mirrored`` replicates over them on a machine without GPUs. On another
    backend than TensorFlow, ``default`` places everything on its default device.
    """
    checks.one_of("--strategy", name, STRATEGIES)
    checks.positive_int("--cpu-devices", cpu_devices)
    if backend_name() != "tensorflow":
        if name != "default" or cpu_devices > 1:
            flag, value = ("--strategy", name) if name != "default" else ("--cpu-devices", cpu_devices)
            checks.fail(flag, value, f"the defaults on the {backend_name()} backend (tf.distribute strategies need "
                        "KERAS_BACKEND=tensorflow)")  # fmt: skip
        return OneDevice()
    if cpu_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices)
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        if IS_KERAS_3:  # Keras 3's fit reduces the first distributed batch, which collective ops cannot do
            checks.fail("--strategy", name, "'default' or 'mirrored' on Keras 3, which cannot train with "
                        "MultiWorkerMirroredStrategy (keras-team/keras#20585); 'multi-worker' with TF_USE_LEGACY_KERAS=1")  # fmt: skip
        if "TF_CONFIG" not in os.environ:
            checks.fail("--strategy", name, "'multi-worker' only with the TF_CONFIG environment variable set")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(distribution):
    resolver = getattr(distribution, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0)


def build_model(name, alpha, image_size, classes, steps, task="classification", weights=None):
    """The ``task``'s model on the ``--model`` backbone, with BN momentum suited to ``steps`` training steps.

    keras.applications' BN momentum 0.999 averages over ~1000 steps: on a small
    data set the moving statistics never converge and validation sits at chance.
    The momentum goes through the constructors (``bn_momentum``), so that the
    saved ``float.keras`` reloads with it in every BatchNormalization.
    ``weights`` (``"imagenet"`` or a weights file of the backbone without top)
    initializes the backbone.
    """
    checks.one_of("--model", name, tuple(MODELS))
    size, minimalistic = MODELS[name]
    momentum = float(np.clip(1.0 - 10.0 / max(steps, 1), 0.9, 0.999))
    return tasks.get(task).build_model(size, minimalistic, classes, (image_size, image_size, 3), alpha, momentum,
                                       weights)  # fmt: skip


def _schedule(base_rate, steps, warmup_fraction=0.05):
    warmup = max(1, int(steps * warmup_fraction))
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, steps - warmup), warmup_target=base_rate, warmup_steps=warmup
    )


def compile_for(model, task, rate, steps, run_eagerly=False):
    """AdamW with warm-up + cosine decay over ``steps`` (a constant ``rate`` if ``steps`` is None), and the
    ``task``'s loss and metrics.

    The schedule costs time in tracing (Small at 96 px, 20 steps: the first ``fit``
    took 28-31 s with it, 19.8 s at a constant rate): a model trained only a few
    steps, as NetAdapt's proposals, takes a constant rate.
    """
    kind = tasks.get(task)
    optimizer = keras.optimizers.AdamW(rate if steps is None else _schedule(rate, steps), weight_decay=WEIGHT_DECAY)
    model.compile(optimizer=optimizer, loss=kind.loss(), metrics=kind.metrics(), run_eagerly=run_eagerly)


def fit(model, data, epochs, work_dir, log_name, chief=True, callbacks=()):
    """``model.fit`` with a progress bar, a per-epoch CSV log, ``BackupAndRestore`` in ``work_dir`` and ``callbacks``;
    returns the log folder. ``release`` deletes the backup once the result is saved.

    All workers of a multi-worker run share ``work_dir`` (a shared file system):
    Keras writes the other workers' checkpoints to temporary sub-folders, and
    their CSV logs go to a temporary folder.
    """
    backup = os.path.join(work_dir, f"{log_name}_backup")
    log_dir = work_dir if chief else tempfile.mkdtemp(prefix=f"{log_name}_log_")
    callbacks = [  # the caller's first: a backup holds what they did at the epoch's end
        *callbacks,
        keras.callbacks.CSVLogger(os.path.join(log_dir, f"{log_name}_history.csv"), append=True),
        keras.callbacks.BackupAndRestore(backup),
    ]
    model.fit(data.train, validation_data=data.val, epochs=epochs, callbacks=callbacks, verbose=1)
    return log_dir


def release(model, work_dir, log_name, log_dir, chief=True):
    """Delete what ``fit`` kept for a resume, once the step's result is saved (a kill before that resumes)."""
    # Every worker past its last checkpoint write before the chief deletes the folder that holds them all
    # (a chief that went first removed a slower worker's workertemp_1/ under it: NotFoundError).
    barrier(getattr(model, "distribute_strategy", None))  # TensorFlow's attribute
    if chief:
        shutil.rmtree(os.path.join(work_dir, f"{log_name}_backup"), ignore_errors=True)
    else:
        shutil.rmtree(log_dir, ignore_errors=True)


def barrier(distribution):
    """Return once every replica of ``distribution`` on every worker has called it (a collective sum).

    None (another backend than TensorFlow, one process): nothing to wait for.
    """
    if distribution is None:
        return
    distribution.reduce("SUM", distribution.run(lambda: tf.constant(1.0)), axis=None)


def read_history(path):
    """``{metric: [value per epoch]}`` from a CSV log (the last row of an epoch that a resumed run redid)."""
    if not os.path.exists(path):
        return {}
    rows = {int(row["epoch"]): row for row in csv.DictReader(open(path))}
    ordered = [rows[e] for e in sorted(rows)]
    return {key: [float(row[key]) for row in ordered] for key in (ordered[0] if ordered else {}) if key != "epoch"}


def save(model, path, chief=True):
    """Save whole (temporary file, then rename); other workers save to a temporary folder (collective saves)."""
    if not chief:
        folder = tempfile.mkdtemp()
        model.save(os.path.join(folder, os.path.basename(path)))
        shutil.rmtree(folder, ignore_errors=True)
        return
    temp = path + ".partial" + os.path.splitext(path)[1]
    model.save(temp)
    os.replace(temp, path)
