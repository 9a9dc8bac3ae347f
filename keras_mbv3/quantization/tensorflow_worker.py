"""``export_tflite`` from a Keras 3 process whose backend is not TensorFlow (JAX, PyTorch).

The TFLite converter traces TensorFlow functions, and one process has one Keras
backend, so the export runs in a TensorFlow worker: the model goes over as its
``.keras`` file (the bridge between backends: same weights, same outputs), the
arguments as a pickle, the calibration images as arrays. The worker runs
``export_tflite`` on the TensorFlow backend and hands back the bytes, its warnings,
or its error, which is raised again here with its own class. The worker's side is
``tensorflow_worker_main`` (it imports ``export``, which imports this module).

A ``.keras`` file is the model's whole state, so the worker's export equals the
one of the same model built on TensorFlow; a QAT model's ranges widened to
XNNPACK's limits are widened in the worker's copy, not in the caller's.
"""

import os
import pickle
import subprocess
import sys
import tempfile
import warnings

import numpy as np

WORKER_TIMEOUT_S = 3600  # the worker's whole run, all of its models
WORKER = "keras_mbv3.quantization.tensorflow_worker_main"  # the worker's side, run with python -m


def _portable(representative_dataset):
    """Calibration data the worker can unpickle: arrays stay, datasets and generators become their arrays."""
    if representative_dataset is None or isinstance(representative_dataset, np.ndarray):
        return representative_dataset
    if callable(representative_dataset):  # a TFLite generator of [input, ...] lists: its samples
        return [[np.asarray(x) for x in sample] for sample in representative_dataset()]
    from keras_mbv3.quantization.calibration import representative_images

    return representative_images(representative_dataset)


def export_all_in_tensorflow(models, arguments):
    """``[export_tflite(model, **arguments) for model in models]`` (no paths) in one TensorFlow worker process,
    which starts once (TensorFlow's imports: 5-8 s) for all of them. The first error is raised here (a note names
    the model's index); each warning is given once, whichever models raised it."""
    arguments = {**arguments, "representative_dataset": _portable(arguments.get("representative_dataset"))}
    with tempfile.TemporaryDirectory(prefix="mbv3-export-") as folder:
        for index, model in enumerate(models):
            model.save(os.path.join(folder, model_file(index)))
        with open(os.path.join(folder, "arguments.pkl"), "wb") as file:
            pickle.dump({"arguments": arguments, "models": len(models)}, file)
        # the conversion needs no accelerator (the caller's backend may hold it); the worker imports what we import
        env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_USE_LEGACY_KERAS": "0", "CUDA_VISIBLE_DEVICES": "-1",
               "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # fmt: skip
        done = subprocess.run([sys.executable, "-m", WORKER, folder], env=env, capture_output=True, text=True,
                              timeout=WORKER_TIMEOUT_S)  # fmt: skip
        try:
            with open(os.path.join(folder, "result.pkl"), "rb") as file:
                result = pickle.load(file)
        except (OSError, pickle.UnpicklingError, EOFError) as error:
            raise RuntimeError(f"the TensorFlow export worker failed (exit code {done.returncode}, {error}):\n"
                               f"{done.stderr[-4000:]}") from None  # fmt: skip
    for category, message in result["warnings"]:
        warnings.warn(message, category, stacklevel=3)
    if "error" in result:
        raise result["error"]
    return result["contents"]


def model_file(index):
    """The name of the ``index``-th model's ``.keras`` file in the worker's folder."""
    return f"model_{index}.keras"
