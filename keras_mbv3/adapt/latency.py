"""NetAdapt's latency lookup table: each unit of a model at its widths, measured once as int8 on LiteRT.

A unit is a run of top-level layers that starts at a layer holding a conv (the
stem conv with its BN and activation, one bneck, the last 1x1 conv, the top):
NetAdapt's cuts change the shapes of one to three units, so a proposal's latency
is the sum of the table's entries, and only shapes never seen are measured. A
unit is measured in the shipped form: quantized by the engine of the Keras line
in use, exported to int8 (int8 in and out, so no QUANTIZE op is counted) and
timed on LiteRT with XNNPACK, as ``mbv3 bench`` times whole models.
"""

import json
import os

import numpy as np

from keras_mbv3 import graph
from keras_mbv3.backend import keras
from keras_mbv3.files import write_atomically


def units(model):
    """``[[layer, ...], ...]``: the model's top-level layers cut into units, in order.

    Raises:
        ValueError: if the top-level layers are not a chain (each reading the one before).
    """
    nodes = [node for node in graph.Graph(model).nodes if not node.is_input]
    found, previous, anchored = [[]], None, False
    for node in nodes:
        if previous is not None and (len(node.inputs) != 1 or node.inputs[0] is not previous):
            raise ValueError(f"Invalid `model`: layer {node.layer.name!r} does not read the layer before it; allowed: "
                             "models whose top-level layers form a chain (as the MobileNetV3 classifiers)")  # fmt: skip
        previous = node.outputs[0]
        if bool(node.layer.weights) and not isinstance(node.layer, keras.layers.BatchNormalization):
            if anchored:
                found.append([])
            anchored = True
        found[-1].append(node.layer)
    return found


def _input_shape(layer):
    return tuple(int(d) for d in layer.input.shape[1:])


def key(unit):
    """The table's key of a unit: its input shape and its layers' classes and configs, names left out."""
    configs = []
    for layer in unit:
        config = {k: v for k, v in layer.get_config().items() if k not in ("name", "trainable", "dtype")}
        configs.append([type(layer).__name__, config])
    return json.dumps([_input_shape(unit[0]), configs], sort_keys=True, default=str)


def unit_model(unit):
    """A model of new layers made from the unit's configs (random weights), on the unit's input shape."""
    inputs = keras.Input(_input_shape(unit[0]))
    x = inputs
    for layer in unit:
        x = type(layer).from_config(layer.get_config())(x)
    return keras.Model(inputs, x)


def _int8(model, images):
    from keras_mbv3.quantization import export_tflite, quantize_model

    quantized = quantize_model(model, representative_dataset=images.astype("float32"))
    return export_tflite(quantized, quantization="int8", input_type="int8", output_type="int8")


def _sample(shape, reads_pixels, rng):
    return rng.uniform(0, 255, (8, *shape)) if reads_pixels else rng.normal(0, 1, (8, *shape))


def measure_units(unit_list, threads=1, rounds=7, model_input=None):
    """``{key: ms}``: the int8 LiteRT latency of each unit of ``unit_list`` (``model_input``: the model's input
    tensor, so that the unit reading it is calibrated on pixels), timed interleaved."""
    from keras_mbv3.quantization.litert import interleaved_latency_ms

    rng = np.random.default_rng(0)
    contents = {}
    for unit in unit_list:
        images = _sample(_input_shape(unit[0]), model_input is not None and unit[0].input is model_input, rng)
        contents[key(unit)] = _int8(unit_model(unit), images)
    return interleaved_latency_ms(contents, rounds=rounds, num_threads=threads)


def measure_models(models, threads=1, rounds=15):
    """``{name: ms}``: whole models (``{name: model}``, inputs in pixels) in the units' int8 form, interleaved."""
    from keras_mbv3.quantization.litert import interleaved_latency_ms

    rng = np.random.default_rng(0)
    contents = {name: _int8(model, _sample(_input_shape(model), True, rng)) for name, model in models.items()}
    return interleaved_latency_ms(contents, rounds=rounds, num_threads=threads)


class LatencyTable:
    """Unit latencies measured at ``threads`` LiteRT threads, kept in ``path`` (JSON, rewritten after each
    measurement) so that a resumed search measures nothing twice.

    Units timed alone ran faster than inside the whole model (a unit timed alone
    finds its weights and activations in cache): Small at 96x96, their sum was
    0.252 against 0.290 ms whole. The ratio holds from model to model: three cut
    models and the start measured side by side were 1.096-1.132x the table's sums,
    so a latency relative to the start's is off by 0.9-2.0%. ``calibrate`` on the
    starting model scales every estimate by measured / sum. (Whole-model medians
    of the same file moved by 11% from one measuring run to the next.)
    """

    def __init__(self, path=None, threads=1):
        self.path, self.threads = path, threads
        self.entries, self.scale = {}, 1.0
        if path and os.path.exists(path):
            saved = json.load(open(path))
            if saved.get("threads") == threads:
                self.entries, self.scale = saved["entries"], saved["scale"]

    def unit_latencies(self, model):
        """``[ms per unit]`` of ``model`` as measured, measuring the units not in the table yet."""
        unit_list = units(model)
        missing = {key(unit): unit for unit in unit_list if key(unit) not in self.entries}
        if missing:
            self.entries.update(measure_units(list(missing.values()), self.threads, model_input=model.inputs[0]))
            self._save()
        return [self.entries[key(unit)] for unit in unit_list]

    def latency(self, model):
        """The table's estimate of ``model``'s int8 latency in ms: its units' sum, calibrated."""
        return float(sum(self.unit_latencies(model)) * self.scale)

    def calibrate(self, model):
        """Measure ``model`` whole; scale the estimates to it. Returns ``(measured ms, sum of units ms)``."""
        measured = measure_models({"model": model}, self.threads)["model"]
        total = float(sum(self.unit_latencies(model)))
        self.scale = measured / total
        self._save()
        return measured, total

    def _save(self):
        if self.path:
            content = json.dumps({"threads": self.threads, "scale": self.scale, "entries": self.entries}, indent=1)
            write_atomically(content.encode(), self.path, overwrite=True)
