"""The TensorFlow worker's side of ``tensorflow_worker``: ``python -m`` this module.

It reads job folders, one a line, on its stdin until the end of its input. For each
it loads every ``FOLDER/model_I.keras`` on the TensorFlow backend in turn, runs
``export_tflite`` with the pickled arguments, leaves the bytes (a list, one per
model), its own warnings, or the first error in ``FOLDER/result.pkl`` (written whole,
then renamed), and answers ``DONE`` on its stdout. Anything else the job prints goes
to its stderr, so the answers stay alone on their pipe.
"""

import os
import pickle
import sys
import warnings


def work(folder):
    """One job: load and export each model, and leave their bytes (a list) or the first error in ``result.pkl``."""
    from keras_mbv3 import keras  # registers the layers for loading
    from keras_mbv3.quantization.export import export_tflite
    from keras_mbv3.quantization.tensorflow_worker import model_file

    with open(os.path.join(folder, "arguments.pkl"), "rb") as file:
        job = pickle.load(file)
    arguments = job["arguments"]
    if isinstance(arguments["representative_dataset"], list):
        samples = arguments["representative_dataset"]
        arguments["representative_dataset"] = lambda: iter(samples)
    result = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        contents = []
        for index in range(job["models"]):
            try:
                contents.append(export_tflite(keras.models.load_model(os.path.join(folder, model_file(index))),
                                              **arguments))  # fmt: skip
            except Exception as error:  # raised again in the caller, with its class when it survives a pickle
                if job["models"] > 1:
                    error.add_note(f"(the worker's model {index} of {job['models']})")
                result["error"] = _portable_error(error)
                break
        else:
            result["contents"] = contents
    keras.backend.clear_session()  # a shared worker converts hundreds of models: their graphs go with each job
    own = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # ours only, as a TensorFlow process shows
    result["warnings"] = list(dict.fromkeys((w.category, str(w.message)) for w in caught
                                            if os.path.abspath(w.filename).startswith(own)))  # fmt: skip
    partial = os.path.join(folder, "result.pkl.partial")
    with open(partial, "wb") as file:
        pickle.dump(result, file)
    os.replace(partial, os.path.join(folder, "result.pkl"))


def _portable_error(error):
    """``error`` if it pickles and unpickles as itself, else a RuntimeError with its class, message and traceback."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        import traceback

        return RuntimeError(f"{type(error).__name__}: {error}\n{''.join(traceback.format_exception(error))}")


def serve():
    """Do the jobs named on stdin, answering each on the original stdout; stdout becomes stderr meanwhile."""
    from keras_mbv3.quantization.tensorflow_worker import DONE

    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    for line in sys.stdin:
        work(line.strip())
        answers.write(DONE + "\n")
        answers.flush()


if __name__ == "__main__":
    serve()
