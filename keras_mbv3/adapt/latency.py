"""NetAdapt's latency lookup table: each unit of a model at its widths, measured once as int8 on LiteRT.

A unit is a run of top-level layers that starts at a layer holding a conv (the
stem conv with its BN and activation, one bneck, the last 1x1 conv, the top):
NetAdapt's cuts change the shapes of one to three units, so a proposal's latency
is the sum of the table's entries, and only shapes never seen are measured. A
unit is measured in the shipped form: quantized by the engine of the Keras line
in use, exported to int8 (int8 in and out, so no QUANTIZE op is counted) and
timed on LiteRT with XNNPACK, as ``mbv3 bench`` times whole models.
"""

import dataclasses
import json
import math
import os
import statistics

import numpy as np

from keras_mbv3 import graph
from keras_mbv3.backend import keras, to_numpy
from keras_mbv3.files import write_atomically


CONFIDENCE = 0.95  # of the measurements' intervals
MAX_ROUNDS = 400  # of a measurement that has not reached its precision (Small at 96 px: 400 x 3 x 10 x 0.2 ms)


@dataclasses.dataclass(frozen=True)
class Measurement:
    """A whole model's int8 latency: ``ms``, the half-width ``half_ms`` of its 95% interval, the ``rounds`` timed,
    and ``vs_before``: its median ratio to the model it was cut from, timed in the same rounds (None if none)."""

    ms: float
    half_ms: float = 0.0
    rounds: int = 0
    vs_before: float = None


def median_interval(values, confidence=CONFIDENCE):
    """``(low, high)``: a distribution-free interval of the median of ``values``, the order statistics
    ``x_(k), x_(n+1-k)`` of the largest ``k`` whose binomial coverage is at least ``confidence`` (15 values:
    the 4th and the 12th, 96.5%); ``(-inf, inf)`` when ``values`` are too few for any (5 or fewer at 95%)."""
    ordered, n = sorted(values), len(values)
    k, tail = 0, 0.0  # tail: P(Binomial(n, 1/2) <= k), the chance that the median lies below x_(k+1)
    while n:
        tail += math.comb(n, k) / 2**n
        if 1 - 2 * tail < confidence:
            break
        k += 1
    return (ordered[k - 1], ordered[n - k]) if k else (-math.inf, math.inf)


def _precise(values_of, precision):
    """``until(samples)`` of ``interleaved_samples``: the median's interval of ``values_of(samples)`` is within
    ``precision`` of the median (relative half-width); None (no extra rounds) without a precision."""
    if precision is None:
        return None

    def until(samples):
        values = values_of(samples)
        low, high = median_interval(values)
        return (high - low) / 2 <= precision * statistics.median(values)

    return until


@dataclasses.dataclass(frozen=True)
class Link:
    """One top-level layer of a chain, as the table sees it: its class, config and input shape ``(H, W, C)``."""

    cls: type
    config: dict
    input_shape: tuple
    weighted: bool  # holds a conv (or dense): a unit starts here

    def out_channels(self):
        """Channels out: the ``filters`` or ``units`` its config sets, else those it reads (BN, activations, pooling)."""
        return self.config.get("filters", self.config.get("units", self.input_shape[-1]))


def links(model, changes=None):
    """``[Link, ...]``: the model's top-level layers, each reading the one before, with ``changes``
    (``{layer name: {argument: value}}``) applied to their configs and the channel counts that follow.

    Raises:
        ValueError: if the top-level layers are not a chain (each reading the one before).
    """
    nodes = [node for node in graph.Graph(model).nodes if not node.is_input]
    found, previous = [], None
    for node in nodes:
        if previous is not None and (len(node.inputs) != 1 or node.inputs[0] is not previous):
            raise ValueError(f"Invalid `model`: layer {node.layer.name!r} does not read the layer before it; allowed: "
                             "models whose top-level layers form a chain (as the MobileNetV3 classifiers)")  # fmt: skip
        previous = node.outputs[0]
        layer = node.layer
        config = {**layer.get_config(), **(changes or {}).get(layer.name, {})}
        shape = tuple(int(d) for d in node.inputs[0].shape[1:])
        if found:  # the channels the link before gives, after the changes
            shape = (*shape[:-1], int(found[-1].out_channels()))
        weighted = bool(layer.weights) and not isinstance(layer, keras.layers.BatchNormalization)
        found.append(Link(type(layer), config, shape, weighted))
    return found


def units(chain):
    """``[[Link, ...], ...]``: a chain cut into units, each starting at a weighted link (the first unit also
    holds what comes before its conv, such as the input's rescaling)."""
    found, anchored = [[]], False
    for link in chain:
        if link.weighted:
            if anchored:
                found.append([])
            anchored = True
        found[-1].append(link)
    return found


def key(unit):
    """The table's key of a unit: its input shape and its layers' classes and configs, names left out."""
    configs = [[link.cls.__name__, {k: v for k, v in link.config.items() if k not in ("name", "trainable", "dtype")}]
               for link in unit]  # fmt: skip
    return json.dumps([unit[0].input_shape, configs], sort_keys=True, default=str)


def unit_model(unit):
    """A model of new layers made from the unit's configs (random weights), on the unit's input shape."""
    inputs = keras.Input(unit[0].input_shape)
    x = inputs
    for link in unit:
        x = link.cls.from_config(link.config)(x)
    return keras.Model(inputs, x)


def _int8(model, images):
    return _int8_all([(model, images)])[0]


def _int8_all(pairs):
    """The int8 ``.tflite`` bytes of each ``(model, calibration images)``: quantized here, converted by one
    ``export_all`` (on JAX or PyTorch, one TensorFlow worker for all)."""
    from keras_mbv3.quantization import quantize_model
    from keras_mbv3.quantization.export import export_all

    quantized = [quantize_model(model, representative_dataset=images.astype("float32")) for model, images in pairs]
    return export_all(quantized, quantization="int8", input_type="int8", output_type="int8")


def unit_inputs(model, images):
    """``{layer name: activations}``: what each top-level layer of ``model`` reads when it runs on ``images``.

    Units are calibrated on these, not on random numbers: a trained classifier
    calibrated on uniform random pixels exported a .tflite whose
    ``allocate_tensors`` aborted the process (LiteRT 2.3.0: "double free or
    corruption"); calibrated on digits it exported and ran.
    """
    nodes = [node for node in graph.Graph(model).nodes if not node.is_input]
    probe = keras.Model(model.inputs[0], [node.inputs[0] for node in nodes])
    return {node.layer.name: to_numpy(value) for node, value in zip(nodes, probe(images, training=False))}


def measure_units(unit_list, activations, threads=1, rounds=7):
    """``{key: ms}``: the int8 LiteRT latency of each unit of ``unit_list``, timed interleaved, each calibrated on
    ``activations[name of its first layer]`` (its first channels, for a unit that reads fewer)."""
    from keras_mbv3.quantization.litert import interleaved_latency_ms

    pairs = []
    for unit in unit_list:  # each calibrated on what its first layer reads (its first channels)
        sample = activations[unit[0].config["name"]][..., : unit[0].input_shape[-1]]
        pairs.append((unit_model(unit), sample))
    contents = _int8_all(pairs)
    return interleaved_latency_ms(dict(zip(map(key, unit_list), contents)), rounds=rounds, num_threads=threads)


class LatencyTable:
    """Unit latencies measured at ``threads`` LiteRT threads, calibrated on ``images`` (a few training images),
    kept in ``path`` (JSON, rewritten after each measurement) so that a resumed search measures nothing twice.

    Units timed alone ran faster than inside the whole model (a unit timed alone
    finds its weights and activations in cache): Small at 96x96, their sum was
    0.252 against 0.290 ms whole. ``calibrate`` on the starting model scales every
    estimate by measured / sum. That scale drifts as a model narrows: Small at
    96x96 adapted to 0.68x of the start by the table measured 0.63x whole, side by
    side (table error +7.5%). So the search re-anchors the scale (``anchor``) on
    each chosen model, measured side by side with the start (``measure``): its
    estimate becomes the start's latency times the measured ratio, and the next
    proposals are estimated from there (chosen models within 4.4% of it, the
    same search). ``start_ms``, measured once, stays the reference. (Whole-model medians of one file moved by
    11% from one measuring run to the next; ratios measured side by side, 1-2%.)
    """

    def __init__(self, images, path=None, threads=1):
        self.images, self.path, self.threads = images, path, threads
        self.entries, self.scale, self.start_ms = {}, 1.0, None
        self._start_file = None  # the start's int8 .tflite, converted once per process
        self._last = []  # [(model, its int8 .tflite)]: the last two converted
        if path and os.path.exists(path):
            with open(path) as f:
                saved = json.load(f)
            if saved.get("threads") == threads:
                self.entries, self.scale, self.start_ms = saved["entries"], saved["scale"], saved.get("start_ms")

    def unit_latencies(self, model, changes=None):
        """``[ms per unit]`` of ``model`` (with ``changes``, as ``links`` takes them) as measured, measuring the
        units not in the table yet."""
        unit_list = units(links(model, changes))
        missing = {key(unit): unit for unit in unit_list if key(unit) not in self.entries}
        if missing:
            activations = unit_inputs(model, self.images)
            self.entries.update(measure_units(list(missing.values()), activations, self.threads))
            self._save()
        return [self.entries[key(unit)] for unit in unit_list]

    def latency(self, model, changes=None):
        """The table's estimate of ``model``'s int8 latency in ms (with ``changes`` to its layers' configs,
        without building that model): its units' sum, calibrated."""
        return float(sum(self.unit_latencies(model, changes)) * self.scale)

    def calibrate(self, model, precision=None, rounds=15):
        """Measure the start ``model`` whole (``measure``'s rounds, alone), make its latency ``start_ms``, the
        reference of every later measurement, and anchor the estimates on it. Returns its ``Measurement``."""
        from keras_mbv3.quantization.litert import interleaved_samples

        self._start_file = _int8(model, self.images)
        until = _precise(lambda samples: samples["start"], precision)
        samples = interleaved_samples({"start": self._start_file}, rounds, num_threads=self.threads, until=until,
                                      max_rounds=MAX_ROUNDS)["start"]  # fmt: skip
        low, high = median_interval(samples)
        self.start_ms = statistics.median(samples)
        self.anchor(model, self.start_ms)
        return Measurement(self.start_ms, (high - low) / 2, len(samples))

    def measure(self, model, start, before=None, precision=None, rounds=15):
        """``model``'s ``Measurement``: ``start_ms`` times its median ratio to ``start``, the two (and ``before``,
        the model it was cut from, if not the start) timed side by side in each round. After ``rounds``, rounds
        go on until the half-width of the ratio's interval is within ``precision`` of it (e.g. a quarter of the
        search's step) or ``MAX_ROUNDS``. The estimates are not re-anchored (``anchor`` does that, for a model kept).

        A ratio per round, not two medians: the models of one round share that
        round's machine state, so the ratio's spread is the noise that matters.
        """
        from keras_mbv3.quantization.litert import interleaved_samples

        if self.start_ms is None:
            raise ValueError("Invalid `start`: the table was not calibrated on the start yet (call "
                             "`calibrate(start)` first)")  # fmt: skip
        self._start_file = self._start_file or _int8(start, self.images)
        contents = {"start": self._start_file}
        if before is not None and before is not start:
            contents["before"] = self._converted(before)
        contents["model"] = self._converted(model)
        ratios = lambda samples, of="start": [m / s for m, s in zip(samples["model"], samples[of])]  # noqa: E731
        samples = interleaved_samples(contents, rounds, num_threads=self.threads, until=_precise(ratios, precision),
                                      max_rounds=MAX_ROUNDS)  # fmt: skip
        low, high = median_interval(ratios(samples))
        vs_before = statistics.median(ratios(samples, "before" if "before" in contents else "start"))
        return Measurement(self.start_ms * statistics.median(ratios(samples)), self.start_ms * (high - low) / 2,
                           len(samples["model"]), vs_before if before is not None else None)  # fmt: skip

    def _converted(self, model):
        """``model``'s int8 file; the last two converted are kept (the model before the cuts, and the cut kept,
        which is the model before the next iteration's cuts)."""
        for index, (kept, content) in enumerate(self._last):
            if kept is model:
                self._last.append(self._last.pop(index))  # the most recently used last
                return content
        content = _int8(model, self.images)
        self._last = [*self._last[-1:], (model, content)]
        return content

    def beside_start(self, model, start, rounds=15):
        """``{"start": ms, "model": ms}``: ``model`` and ``start`` whole, in int8, timed side by side (interleaved;
        the start is converted once per table)."""
        from keras_mbv3.quantization.litert import interleaved_latency_ms

        self._start_file = self._start_file or _int8(start, self.images)
        both = {"start": self._start_file, "model": _int8(model, self.images)}
        return interleaved_latency_ms(both, rounds=rounds, num_threads=self.threads)

    def anchor(self, model, ms):
        """Scale the estimates so that ``model``'s is ``ms`` (a latency ``calibrate`` measured, given again on a
        resume). Returns ``(ms, sum of units ms)``."""
        total = float(sum(self.unit_latencies(model)))
        self.scale = ms / total
        self._save()
        return ms, total

    def _save(self):
        if self.path:
            saved = {"threads": self.threads, "scale": self.scale, "start_ms": self.start_ms, "entries": self.entries}
            write_atomically(json.dumps(saved, indent=1).encode(), self.path, overwrite=True)
