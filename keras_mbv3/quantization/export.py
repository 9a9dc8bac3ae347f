"""Export to ``.tflite``: float32, float16, dynamic-range and full int8, checked and written whole.

The steps: ``converter`` (the TFLite converter), ``flatbuffer`` (signature, detection
outputs, names, metadata in one pass), ``graph_check`` (int8: fully int8, one XNNPACK partition).
"""

import inspect
import os

from keras_mbv3 import checks
from keras_mbv3.backend import IS_KERAS_3, keras, to_numpy
from keras_mbv3.files import refuse_existing, write_atomically
from keras_mbv3.graph import input_name
from keras_mbv3.quantization.converter import IO_TYPES, NOTICES, QUANTIZATIONS, check_calibration, convert  # noqa: F401
from keras_mbv3.quantization.flatbuffer import finish
from keras_mbv3.quantization.graph_check import Int8GraphError, check_int8_graph  # noqa: F401
from keras_mbv3.quantization.metadata import ImageModelMetadata
from keras_mbv3.quantization.postprocess import FLOAT_TAIL, DetectionPostProcess
from keras_mbv3.quantization.tensorflow_worker import export_all_in_tensorflow


def export_tflite(model, path=None, *, quantization="int8", representative_dataset=None, input_type="int8",
                  output_type="int8", strip_names=False, check_graph="raise", overwrite=False, metadata=None,
                  postprocess=None):  # fmt: skip
    """Convert ``model`` to a ``.tflite`` flatbuffer and optionally write it.

    Args:
        model: a Keras model (any number of inputs and outputs); a QAT model from
            ``quantize_model`` for QAT int8.
        path: where to write the file, or None to only return the bytes. Written to
            a temporary file and renamed, so it is whole or absent.
        quantization: ``"int8"`` (full integer; a float model needs
            ``representative_dataset``: post-training quantization of its int8
            form, see ``int8_form``), ``"float16"``,
            ``"float32"`` or ``"dynamic"`` (int8 weights, float activations).
        representative_dataset: calibration images for post-training int8 of a
            one-input model: an array ``(N, H, W, C)``, a ``tf.data.Dataset`` of
            images or batches, or a TFLite generator function (any model).
        input_type, output_type: ``"int8"``, ``"uint8"`` or ``"float32"``: the I/O of
            an int8 model (float models always take and give float32; with a
            ``postprocess`` the outputs are its float32 ones, ``output_type`` unused).
        strip_names: drop the names of inner tensors: a smaller file to ship,
            the same graph, outputs, input/output names and signature; tools
            such as Netron then show ops without their Keras layer names.
        check_graph: for int8, ``"raise"`` (``Int8GraphError``) or ``"warn"`` when
            the graph is not one XNNPACK partition (``check_int8_graph``); float
            islands always raise.
        overwrite: replace an existing ``path``.
        metadata: an ``ImageModelMetadata`` (task, class names, normalization)
            written as TFLite metadata with a labels file, as MediaPipe Tasks
            read it (they take uint8 or float32 input, not int8).
        postprocess: a ``DetectionPostProcess`` for a detection model (outputs box
            encodings and class logits): the export ends in TFLite_Detection_PostProcess
            (decoding and per-class NMS; outputs ``detection_boxes``, ``detection_classes``,
            ``detection_scores``, ``num_detections``, float32), the network before it in int8.

    Returns:
        The ``.tflite`` bytes, with a ``serving_default`` signature (inputs named
        after the Keras ``Input`` layers, outputs ``output_0``, ...).

    A model with NaN or infinite weights or ranges (a training that diverged) raises
    ``ValueError`` naming them; the converter crashed on one.

    On a Keras 3 backend other than TensorFlow (JAX, PyTorch), the conversion runs in
    a TensorFlow worker process that loads the model from its ``.keras`` file
    (``tensorflow_worker``): the same bytes, about 6 s more for the worker's start (measured), once for all
    the exports inside a ``tensorflow_worker.shared_worker()`` block.
    """
    given = locals()
    arguments = {name: given[name] for name in _DEFAULTS}
    _check_arguments(model, **arguments)
    if path is not None:
        refuse_existing(os.fspath(path), overwrite)  # before the (long) conversion
    if _elsewhere():
        content = export_all_in_tensorflow([model], arguments)[0]
    else:
        content = convert(model, quantization, representative_dataset, input_type, output_type, postprocess)
        content = finish(content, [input_name(t) for t in model.inputs], strip_names, metadata, postprocess)
        if quantization == "int8":
            check_int8_graph(content, check_graph, FLOAT_TAIL if postprocess is not None else ())
    if path is not None:
        write_atomically(content, path, overwrite)
    return content


def export_all(models, **arguments):
    """``[export_tflite(model, **arguments) for model in models]``: the bytes, no files (``arguments``: those of
    ``export_tflite`` but ``path`` and ``overwrite``). On a Keras 3 backend other than TensorFlow one worker converts
    them all: NetAdapt's latency table exports tens of unit models, and a worker each would start TensorFlow
    (5-8 s) that many times."""
    unknown = sorted(set(arguments) - set(_DEFAULTS))
    if unknown:
        checks.fail("arguments", unknown, f"export_tflite's keyword arguments but path and overwrite: {sorted(_DEFAULTS)}",
                    TypeError)  # fmt: skip
    if not _elsewhere():
        contents = []
        for model in models:  # a loop, not a comprehension (a frame of its own): warnings name the caller's line
            contents.append(export_tflite(model, **arguments))
        return contents
    arguments = {**_DEFAULTS, **arguments}
    for model in models:
        _check_arguments(model, **arguments)
    return export_all_in_tensorflow(models, arguments) if models else []


def _elsewhere():
    """Whether the conversion runs in a TensorFlow worker: on a Keras 3 backend other than TensorFlow."""
    return IS_KERAS_3 and keras.backend.backend() != "tensorflow"


def _check_arguments(model, *, quantization, representative_dataset, input_type, output_type, strip_names,
                     check_graph, metadata, postprocess):  # fmt: skip
    checks.one_of("quantization", quantization, QUANTIZATIONS)
    checks.one_of("strip_names", strip_names, (False, True))
    checks.one_of("input_type", input_type, tuple(IO_TYPES))
    checks.one_of("output_type", output_type, tuple(IO_TYPES))
    checks.one_of("check_graph", check_graph, ("raise", "warn"))
    if metadata is not None and not isinstance(metadata, ImageModelMetadata):
        checks.fail("metadata", metadata, "None or a keras_mbv3.quantization.ImageModelMetadata", TypeError)
    if postprocess is not None and not isinstance(postprocess, DetectionPostProcess):
        checks.fail("postprocess", postprocess, "None or a keras_mbv3.quantization.DetectionPostProcess", TypeError)
    check_calibration(model, quantization, representative_dataset)
    _check_finite(model)


def _check_finite(model):
    """A model whose weights or ranges hold NaN or infinity (a training that diverged) is refused by name: the TFLite
    converter crashed on one (segmentation fault) instead of saying so."""
    import numpy as np

    broken = [getattr(w, "path", w.name) for w in model.weights if not np.all(np.isfinite(to_numpy(w)))]
    if broken:
        checks.fail("model", f"a model with NaN or infinite values in {broken[:5]}" + (" ..." if len(broken) > 5 else ""),
                    "finite weights and ranges")  # fmt: skip


_DEFAULTS = {name: parameter.default for name, parameter in inspect.signature(export_tflite).parameters.items()
             if parameter.kind is parameter.KEYWORD_ONLY and name != "overwrite"}  # fmt: skip
