"""Float training and QAT fine-tuning with Keras callbacks, resumable and distributable.

A run folder holds each step's result (``float.keras``, ``qat.keras``) written
whole, its per-epoch log (``*_history.csv``) and, while the step runs, a
``BackupAndRestore`` folder: a run killed at any point resumes from its last
finished epoch when started again with the same folder.
"""

import contextlib
import csv
import dataclasses
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from keras_mbv3 import checks
from keras_mbv3.backend import IS_KERAS_3, keras
from keras_mbv3.batchnorm import precise_batchnorm
from keras_mbv3.fit_state import build_fit_state
from keras_mbv3.optimizers import AdamW
from keras_mbv3.recipes import data as data_lib
from keras_mbv3.recipes import tasks
from keras_mbv3.traced_gradients import release_traced_gradients

MODELS = {  # --model: (size, minimalistic); each task builds its own model of that backbone
    "small": ("small", False),
    "large": ("large", False),
    "small-minimalistic": ("small", True),
    "large-minimalistic": ("large", True),
}
STRATEGIES = ("default", "mirrored", "multi-worker", "data-parallel")
WEIGHT_DECAY = 1e-5  # the paper's


class OneDevice:
    """The default placement on a backend other than TensorFlow: what the recipe asks of a strategy."""

    num_replicas_in_sync = 1
    cluster_resolver = None
    is_chief = True

    def scope(self):
        return contextlib.nullcontext()

    def barrier(self):
        pass

    def check_same_weights(self, model):
        pass


class DataParallel(OneDevice):
    """``keras.distribution.DataParallel`` over every device of every process (JAX), set for the whole process.

    ``fit`` splits each global batch over the devices (and a ``tf.data`` input over
    the processes, each reading its share), and every process holds the same
    weights; process 0 is the chief that writes the run folder.
    """

    def __init__(self):
        import jax

        devices = keras.distribution.list_devices()
        self.distribution = keras.distribution.DataParallel(devices=devices)
        keras.distribution.set_distribution(self.distribution)  # fit shards the batches while it is set
        self.num_replicas_in_sync = len(devices)
        self.is_chief = jax.process_index() == 0
        self.num_processes = jax.process_count()

    def scope(self):
        return self.distribution.scope()

    def barrier(self):
        if self.num_processes > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("mbv3")

    def check_same_weights(self, model):
        """Raise unless every process holds the same weights: what each computes on its own (precise BN
        statistics over its pipeline's batches) must agree, or the processes would go on with different models."""
        if self.num_processes > 1:
            from jax.experimental import multihost_utils

            multihost_utils.assert_equal([np.asarray(w) for w in model.weights],
                                         "the processes of a data-parallel run hold different weights")  # fmt: skip


def backend_name():
    """The Keras backend: ``"tensorflow"`` on tf_keras, else Keras 3's (``"jax"``, ``"torch"``, ...)."""
    return keras.backend.backend() if IS_KERAS_3 else "tensorflow"


def _from_environment(flag, value, variable, default):
    """The flag's value, else the environment variable's (an integer, named in the error if it is not one)."""
    if value is not None:
        return value
    text = os.environ.get(variable)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        checks.fail(variable, text, f"an integer (it stands for {flag})")


def cluster_of(coordinator=None, num_processes=None, process_id=None, environment=True):
    """``(coordinator, num_processes, process_id)`` from the flags, else (``environment``) keras.distribution's
    environment variables, which only ``--strategy data-parallel`` reads."""
    env = os.environ if environment else {}
    coordinator = coordinator or env.get("KERAS_DISTRIBUTION_JOB_ADDRESSES")
    if environment:
        num_processes = _from_environment("--num-processes", num_processes, "KERAS_DISTRIBUTION_NUM_PROCESSES", 1)
        process_id = _from_environment("--process-id", process_id, "KERAS_DISTRIBUTION_PROCESS_ID", 0)
    num_processes = checks.positive_int("--num-processes", 1 if num_processes is None else num_processes)
    process_id = 0 if process_id is None else process_id
    if not 0 <= process_id < num_processes:
        checks.fail("--process-id", process_id, f"0 to --num-processes - 1 ({num_processes - 1})")
    if num_processes > 1 and not coordinator:
        checks.fail("--coordinator", coordinator, "HOST:PORT of process 0 when --num-processes > 1")
    return coordinator, num_processes, process_id


def _data_parallel(cpu_devices, cluster):
    """The processes joined (``cluster``) and ``cpu_devices`` host devices made, then DataParallel over them all."""
    if backend_name() != "jax":
        checks.fail("--strategy", "data-parallel", "'data-parallel' on the JAX backend (KERAS_BACKEND=jax), the "
                    "backend of keras.distribution")  # fmt: skip
    import jax

    if cpu_devices > 1:  # before JAX makes its devices (its first computation does)
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={cpu_devices}".strip()
    coordinator, num_processes, process_id = cluster
    if num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes reduce over TCP
        keras.distribution.initialize(coordinator, num_processes, process_id)
    if cpu_devices > 1 and len(jax.local_devices()) != cpu_devices:
        checks.fail("--cpu-devices", cpu_devices, f"1 once JAX has made its devices ({len(jax.local_devices())} "
                    "here); or XLA_FLAGS=--xla_force_host_platform_device_count=N before the start")  # fmt: skip
    return DataParallel()


def strategy(name, cpu_devices=1, cluster=(None, 1, 0)):
    """The distribution for ``--strategy`` (call before the backend creates its devices).

    On TensorFlow, a ``tf.distribute`` strategy: ``cpu_devices`` > 1 splits the CPU
    into that many logical devices, so that ``mirrored`` replicates over them on a
    machine without GPUs. On JAX, ``data-parallel`` is ``keras.distribution``'s
    DataParallel over ``cpu_devices`` host devices (or the accelerators) of each of
    the ``cluster``'s processes ``(coordinator, num_processes, process_id)``. On
    another backend than TensorFlow, ``default`` places everything on its default device.
    """
    checks.one_of("--strategy", name, STRATEGIES)
    checks.positive_int("--cpu-devices", cpu_devices)
    if cluster[1] > 1 and name != "data-parallel":
        checks.fail("--num-processes", cluster[1], "1 unless --strategy data-parallel (multi-worker reads TF_CONFIG)")
    if name == "data-parallel":
        return _data_parallel(cpu_devices, cluster)
    if backend_name() != "tensorflow":
        if name != "default" or cpu_devices > 1:
            flag, value = ("--strategy", name) if name != "default" else ("--cpu-devices", cpu_devices)
            allowed = "the defaults or 'data-parallel'" if backend_name() == "jax" else "the defaults"
            checks.fail(flag, value, f"{allowed} on the {backend_name()} backend (tf.distribute strategies need "
                        "KERAS_BACKEND=tensorflow)")  # fmt: skip
        return OneDevice()
    if cpu_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices)
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        if IS_KERAS_3:  # Keras 3's fit reduces the first distributed batch, which collective ops cannot do
            checks.fail("--strategy", name, "'default' or 'mirrored' on Keras 3 with TensorFlow, which cannot train "
                        "with MultiWorkerMirroredStrategy (keras-team/keras#20585); 'multi-worker' with "
                        "TF_USE_LEGACY_KERAS=1, or 'data-parallel' over several processes on JAX (KERAS_BACKEND=jax)")  # fmt: skip
        if "TF_CONFIG" not in os.environ:
            checks.fail("--strategy", name, "'multi-worker' only with the TF_CONFIG environment variable set")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(distribution):
    if isinstance(distribution, OneDevice):
        return distribution.is_chief
    resolver = getattr(distribution, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0)


def build_model(name, alpha, image_size, classes, steps, task="classification", weights=None):
    """The ``task``'s model (a ``--task`` name, or a ``tasks.Task`` with its options) on the ``--model`` backbone,
    with BN momentum suited to ``steps`` training steps.

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
    kind = tasks.get(task) if isinstance(task, str) else task
    return kind.build_model(size, minimalistic, classes, (image_size, image_size, 3), alpha, momentum, weights)


def _schedule(base_rate, steps, warmup_fraction=0.05):
    warmup = max(1, int(steps * warmup_fraction))
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, steps - warmup), warmup_target=base_rate, warmup_steps=warmup
    )


def compile_for(model, task, rate, steps, run_eagerly=False):
    """AdamW with warm-up + cosine decay over ``steps`` (a constant ``rate`` if ``steps`` is None), and the
    ``task``'s loss and metrics.

    The optimizer is ``keras_mbv3.optimizers.AdamW``, which evaluates the schedule
    once per step where Keras 3's evaluates it once per variable (a trace 1.7x as long).
    A model trained only a few steps, as NetAdapt's proposals, takes a constant rate.
    """
    kind = tasks.get(task)
    optimizer = AdamW(rate if steps is None else _schedule(rate, steps), weight_decay=WEIGHT_DECAY)
    model.compile(optimizer=optimizer, loss=kind.loss(), metrics=kind.metrics(), run_eagerly=run_eagerly)


class RestoreOnly(keras.callbacks.BackupAndRestore):
    """BackupAndRestore for the processes other than the chief: restores the chief's backup, never writes or deletes it.

    Each save still writes the weights, to a temporary file: reading a JAX array
    spread over processes is a collective that every process must join (a chief
    that saved alone hung, then failed in a mismatched ``device_put``).
    """

    def _save_model(self):
        with tempfile.TemporaryDirectory() as folder:
            self.model.save_weights(os.path.join(folder, "backup.weights.h5"))

    def on_train_end(self, logs=None):
        pass


@dataclasses.dataclass(frozen=True)
class Fit:
    """What one fit of a step is: ``epochs`` over a data set in batches of ``batch_size`` for ``task``, AdamW at
    ``rate`` with warm-up + cosine decay over the fit's steps, from the random state of ``seed``."""

    task: str
    rate: float
    epochs: int
    batch_size: int
    seed: int

    def steps(self, data, whole=False):
        """The fit's steps over ``data``: each epoch's batches, the last partial one left out if ``whole``."""
        return self.epochs * data_lib.steps_per_epoch(data.train_size, self.batch_size, whole)


def train(plan, make_model, data, work_dir, log_name, distribution, callbacks=(), before_fit=None,
          precise_bn=False):  # fmt: skip
    """The fit of every step (train, qat, the adapt step's fine-tune): seed, make and compile, fit, BN statistics.

    Seeds with ``plan.seed``, makes ``make_model(steps)`` and compiles it (``compile_for``)
    in the scope of ``distribution``, calls ``before_fit()`` (a step records its settings
    only now: one that fails before training leaves no trace), fits it resumably in
    ``work_dir`` (``fit``: ``{log_name}_history.csv``, ``{log_name}_backup``), recomputes
    its BatchNormalization statistics from ``data``'s training batches if ``precise_bn``,
    and checks that every process holds the same weights.

    Returns:
        ``(model, log_dir, bn_images)``: ``log_dir`` for ``release`` once the result is
        saved; ``bn_images`` the images of the BN statistics (0 without ``precise_bn``).
    """
    keras.utils.set_random_seed(plan.seed)
    batches, whole = _batches(data, plan.batch_size, distribution)
    steps = plan.steps(data, whole)
    with distribution.scope():
        model = make_model(steps)
        compile_for(model, plan.task, plan.rate, steps)
    if before_fit is not None:
        before_fit()
    chief = is_chief(distribution)
    log_dir = fit(model, batches, plan.epochs, work_dir, log_name, chief, callbacks)
    bn_images = precise_batchnorm(model, data.train) if precise_bn else 0
    check_same_weights(distribution, model)
    return model, log_dir, bn_images


def _batches(data, batch_size, distribution):
    """``(the data set fit takes, whether its training batches are whole)``.

    Over several processes, whole batches of both splits (``Data.whole_batches``).
    On JAX, whole training batches where there is one: each new batch shape
    compiles the train step anew (Small's QAT step at 32 px on digits, 22 batches
    of 64 and one of 30: 18.7 s, then 18.2 s again for the last one); the images
    left out are others in each epoch (shuffled). Validation keeps every image.
    """
    if getattr(distribution, "num_processes", 1) > 1:
        return data.whole_batches(batch_size), True
    if backend_name() == "jax" and data.train_size >= batch_size:
        return data.whole_batches_of(batch_size, "train"), True
    return data, False


def fit(model, data, epochs, work_dir, log_name, chief=True, callbacks=()):
    """``model.fit`` with a progress bar, a per-epoch CSV log, ``BackupAndRestore`` in ``work_dir`` and ``callbacks``;
    returns the log folder. The backup goes when ``fit`` ends (Keras deletes it); ``release`` removes what is left.

    All workers of a multi-worker run share ``work_dir`` (a shared file system):
    Keras writes the other workers' checkpoints to temporary sub-folders, and
    their CSV logs go to a temporary folder.
    """
    backup = os.path.join(work_dir, f"{log_name}_backup")
    log_dir = work_dir if chief else tempfile.mkdtemp(prefix=f"{log_name}_log_")
    # tf_keras' multi-worker strategy sends the other workers' backups elsewhere itself; a JAX process other than
    # the chief restores the chief's backup (the same weights everywhere) and leaves it alone
    restore = keras.callbacks.BackupAndRestore if chief or not IS_KERAS_3 else RestoreOnly
    callbacks = [  # the caller's first: a backup holds what they did at the epoch's end
        *callbacks,
        keras.callbacks.CSVLogger(os.path.join(log_dir, f"{log_name}_history.csv"), append=True),
        restore(backup),
    ]
    fit_traced_once(model, data.train, validation_data=data.val, epochs=epochs, callbacks=callbacks, verbose=1)
    return log_dir


def fit_traced_once(model, train, **fit_args):
    """``model.fit(train, **fit_args)``: its train step traced once (``build_fit_state``), and the traced gradient
    closures released after it (each fit's graph would otherwise live on); returns the History."""
    build_fit_state(model, train)
    history = model.fit(train, **fit_args)
    release_traced_gradients()
    return history


def release(distribution, work_dir, log_name, log_dir, chief=True):
    """Delete what ``fit`` left (a backup folder, the other workers' logs), once the step's result is saved."""
    # Every worker past its last checkpoint write before the chief deletes the folder that holds them all
    # (a chief that went first removed a slower worker's workertemp_1/ under it: NotFoundError).
    barrier(distribution)
    if chief:
        shutil.rmtree(os.path.join(work_dir, f"{log_name}_backup"), ignore_errors=True)
    else:
        shutil.rmtree(log_dir, ignore_errors=True)


def check_same_weights(distribution, model):
    """Raise if the processes of ``distribution`` hold different weights (JAX data-parallel; tf.distribute keeps them
    in sync itself)."""
    if isinstance(distribution, OneDevice):
        distribution.check_same_weights(model)


def barrier(distribution):
    """Return once every replica of ``distribution`` on every worker has called it (a collective sum)."""
    if isinstance(distribution, OneDevice):
        return distribution.barrier()
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
