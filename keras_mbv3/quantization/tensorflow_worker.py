"""``export_tflite`` from a Keras 3 process whose backend is not TensorFlow (JAX, PyTorch).

The TFLite converter traces TensorFlow functions, and one process has one Keras
backend, so the export runs in a TensorFlow worker: the model goes over as its
``.keras`` file (the bridge between backends: same weights, same outputs), the
arguments as a pickle, the calibration images as arrays. The worker runs
``export_tflite`` on the TensorFlow backend and hands back the bytes, its warnings,
or its error, which is raised again here with its own class. The worker's side is
``tensorflow_worker_main`` (it imports ``export``, which imports this module).

A worker starts TensorFlow once (5-8 s). Inside ``shared_worker()`` every export
goes to one worker, started at the first and stopped at the end of the block: the
``mbv3`` commands run in it, and NetAdapt's search on JAX, which converts its unit
models 20-odd times, spent 169 s of its 387 s starting workers before it did.

A ``.keras`` file is the model's whole state, so the worker's export equals the
one of the same model built on TensorFlow; a QAT model's ranges widened to
XNNPACK's limits are widened in the worker's copy, not in the caller's.
"""

import contextlib
import contextvars
import os
import pickle
import selectors
import subprocess
import sys
import tempfile
import threading
import time
import warnings

import numpy as np

WORKER_TIMEOUT_S = 3600  # one job of the worker, all of its models
WORKER = "keras_mbv3.quantization.tensorflow_worker_main"  # the worker's side, run with python -m
DONE = "done"  # the worker's line on its stdout after each job (lines printed before it are passed over)
_SHARED = contextvars.ContextVar("shared_tensorflow_worker", default=None)


class _Worker:
    """A TensorFlow worker process: it reads job folders, one a line, on its stdin and answers each with ``DONE``
    on its stdout once the folder's ``result.pkl`` is written; its log goes to a file (a full pipe would stall it)."""

    def __init__(self):
        # the conversion needs no accelerator (the caller's backend may hold it); the worker imports what we import
        env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_USE_LEGACY_KERAS": "0", "CUDA_VISIBLE_DEVICES": "-1",
               "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # fmt: skip
        self.log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen([sys.executable, "-m", WORKER], env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.log, text=True)  # fmt: skip

    def run(self, folder):
        """Have the worker do the job in ``folder``; raise RuntimeError with its log if it died or timed out. A job
        left unanswered (an error or an interrupt here) stops the worker: its answer would come to the next job."""
        try:
            self.process.stdin.write(folder + "\n")
            self.process.stdin.flush()
            answer = self._answer()
        except BrokenPipeError:
            answer = "its input closed"
        except BaseException:
            self.process.kill()
            self.close()
            raise
        if answer != DONE:
            self.process.kill()
            self.process.wait()
            self.log.seek(0)
            log = self.log.read()[-4000:]
            self.close()
            raise RuntimeError(f"the TensorFlow export worker failed (exit code {self.process.returncode}, "
                               f"{answer}):\n{log}")  # fmt: skip

    def _answer(self):
        deadline = time.monotonic() + WORKER_TIMEOUT_S
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while selector.select(max(0.0, deadline - time.monotonic())):
                line = self.process.stdout.readline()
                if not line:
                    return "it ended"
                if line.strip() == DONE:
                    return DONE
        return f"no answer in {WORKER_TIMEOUT_S} s"

    def close(self):
        """Stop the worker (at the end of its input; killed after 60 s) and close its pipes and log."""
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.log.close()


class _Shared:
    """The worker of a ``shared_worker()`` block: started at its first job, again if it died."""

    def __init__(self):
        self.lock, self.worker, self.closed = threading.Lock(), None, False

    def run(self, folder):
        with self.lock:
            if self.worker is None or self.worker.process.poll() is not None:
                if self.worker is not None:
                    self.worker.close()
                self.worker = _Worker()
            self.worker.run(folder)

    def close(self):
        with self.lock:
            self.closed = True
            if self.worker is not None:
                self.worker.close()


@contextlib.contextmanager
def shared_worker():
    """Within the block, exports in a TensorFlow worker share one worker process (started at the first export,
    again if it died, stopped at the end; nested blocks share the outer one's). The block belongs to its context:
    another thread's exports start workers of their own, and so does a context copied from it after it ended."""
    outer = _SHARED.get()
    if outer is not None and not outer.closed:
        yield
        return
    shared = _Shared()
    token = _SHARED.set(shared)
    try:
        yield
    finally:
        shared.close()
        _SHARED.reset(token)


def _portable(representative_dataset):
    """Calibration data the worker can unpickle: arrays stay, datasets and generators become their arrays."""
    if representative_dataset is None or isinstance(representative_dataset, np.ndarray):
        return representative_dataset
    if callable(representative_dataset):  # a TFLite generator of [input, ...] lists: its samples
        return [[np.asarray(x) for x in sample] for sample in representative_dataset()]
    from keras_mbv3.quantization.calibration import representative_images

    return representative_images(representative_dataset)


def export_all_in_tensorflow(models, arguments):
    """``[export_tflite(model, **arguments) for model in models]`` (no paths) in a TensorFlow worker process: the
    ``shared_worker()`` block's, else one for these models alone. The first error is raised here (a note names the model's
    index); each warning is given once, whichever models raised it."""
    arguments = {**arguments, "representative_dataset": _portable(arguments.get("representative_dataset"))}
    with tempfile.TemporaryDirectory(prefix="mbv3-export-") as folder:
        for index, model in enumerate(models):
            model.save(os.path.join(folder, model_file(index)))
        with open(os.path.join(folder, "arguments.pkl"), "wb") as file:
            pickle.dump({"arguments": arguments, "models": len(models)}, file)
        with shared_worker():  # outside a block, a block of this job alone
            _SHARED.get().run(folder)
        with open(os.path.join(folder, "result.pkl"), "rb") as file:
            result = pickle.load(file)
    for category, message in result["warnings"]:
        warnings.warn(message, category, stacklevel=3)
    if "error" in result:
        raise result["error"]
    return result["contents"]


def model_file(index):
    """The name of the ``index``-th model's ``.keras`` file in the worker's folder."""
    return f"model_{index}.keras"
