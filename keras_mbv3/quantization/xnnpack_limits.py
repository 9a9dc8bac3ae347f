"""XNNPACK's int8 scale limits, kept by the ranges of a QAT model (either engine).

XNNPACK takes an int8 ``ADD`` only when each input scale over the output scale
is in [2^-10, 2^8), and an int8 ``MUL`` only when the product of the input
scales over the output scale is in [2^-16, 2^8) (``xnnpack_delegate.cc``:
``CheckTensorsInputOutputScale``, ``CheckTensorsInputProductOutputScale``).
An op outside them runs in the slow builtin kernel and splits the graph.

Trained ranges are far inside, but a range that cannot follow its data
breaks them. Measured: MobileNetV3Small at 224, untrained, calibrated on
random images, exported with 17 partitions. Its near-silent hard-swish inputs
hold the gate's domain [-3, 3] (``calibration.GATE_INPUT_RANGE``) while the
products ``x * relu6(x + 3)`` span 1e-6, which puts 16 MUL ratios at 500 to
141,000. ``enforce`` widens the fewest ranges needed (an op's output, or an
input that is too narrow for the output), a factor ``MARGIN`` inside the
limits, so that the ratios stay inside as ranges move a little in training.
"""

import dataclasses

import numpy as np

from keras_mbv3.backend import keras
from keras_mbv3.layers.activations import HardGate

ADD_LIMITS = (2.0**-10, 2.0**8)  # input scale / output scale
MUL_LIMITS = (2.0**-16, 2.0**8)  # input scale * input scale / output scale
MARGIN = 4.0
LEVELS = 255.0  # int8 steps in a range


@dataclasses.dataclass(frozen=True, eq=False)
class Range:
    """A tensor's int8 range: its min and max variables, or a fixed ``(min, max)``."""

    minimum: object
    maximum: object
    fixed: bool = False

    def value(self):
        if self.fixed:
            return self.minimum, self.maximum
        return float(self.minimum.numpy()), float(self.maximum.numpy())  # .numpy(): distributed variables too

    def scale(self):
        low, high = self.value()
        return max(high - low, 0.0) / LEVELS

    def widen_to(self, scale):
        """Scale the range about 0 so that its int8 scale is ``scale`` (a range of width 0 becomes [-w/2, w/2])."""
        low, high = self.value()
        width = scale * LEVELS
        if high - low <= 0:
            low, high = -width / 2, width / 2
        else:
            factor = width / (high - low)
            low, high = low * factor, high * factor
        self.minimum.assign(low)
        self.maximum.assign(high)


@dataclasses.dataclass(frozen=True)
class Constraint:
    """One int8 ``ADD`` or ``MUL`` of the exported graph: the ranges of its tensor inputs and of its output.

    A constant input of an ADD (the 3 of ``relu6(x + 3)``) is left out: the
    converter gives it a range of its own, well inside the limits. A MUL by a
    constant ``c`` (the exact hard-swish's ``x / 6``) has ``constant_scale``
    ``|c| / 255``, the scale the converter gives the constant.
    """

    op: str
    inputs: tuple
    output: Range
    name: str
    constant_scale: float = 1.0


def _widen(rng, scale):
    """Widen ``rng`` to ``scale`` and 1% more (float32 rounding must not leave it on the limit); True if it moved."""
    if rng.fixed or rng.scale() >= scale:
        return False
    rng.widen_to(scale * 1.01)
    return True


def _constant_multiplier(layer):
    """The ``constant_scale`` of a ``Rescaling`` without offset (one MUL by a constant), else None."""
    if np.size(layer.scale) != 1 or np.any(np.asarray(layer.offset) != 0):
        return None
    return abs(float(np.asarray(layer.scale))) / LEVELS


def constraints(g, range_of, layer_of=lambda layer: layer):
    """The ``Constraint`` of every int8 ADD and MUL that a QAT graph exports to.

    Args:
        g: the ``keras_mbv3.graph.Graph`` of a QAT model.
        range_of: ``range_of(tensor)``: the tensor's ``Range`` in the int8 graph, or None.
        layer_of: the float layer that a QAT graph's layer computes (tfmot wraps them).
    """
    layers = keras.layers
    found = []
    for node in g.nodes:
        layer = layer_of(node.layer)
        constant = 1.0
        if isinstance(layer, layers.Rescaling):
            constant = _constant_multiplier(layer)
            if constant is None:
                continue
        elif not isinstance(layer, (layers.Add, layers.Subtract, layers.Multiply, HardGate)):
            continue
        op = "MUL" if isinstance(layer, (layers.Multiply, layers.Rescaling)) else "ADD"
        inputs = tuple(r for r in map(range_of, node.inputs) if r is not None)
        output = range_of(node.outputs[0])
        if inputs and output is not None:
            found.append(Constraint(op, inputs, output, layer.name, constant))
    return found


def _enforce_one(constraint):
    """Widen ranges of one op until its ratios are ``MARGIN`` inside XNNPACK's limits; return how many changed."""
    changed = 0
    out = constraint.output
    if constraint.op == "MUL":
        low, high = MUL_LIMITS
        product = float(np.prod([r.scale() for r in constraint.inputs])) * constraint.constant_scale
        if product / max(out.scale(), 1e-30) >= high / MARGIN:
            changed += _widen(out, product * MARGIN / high)
        if product / max(out.scale(), 1e-30) < low * MARGIN:  # inputs too narrow for the output: widen one
            need = low * MARGIN * out.scale() / max(product, 1e-30)
            movable = [r for r in constraint.inputs if not r.fixed]
            changed += bool(movable) and _widen(movable[0], movable[0].scale() * need)
        return changed
    low, high = ADD_LIMITS
    for rng in constraint.inputs:
        if rng.scale() / max(out.scale(), 1e-30) >= high / MARGIN:
            changed += _widen(out, rng.scale() * MARGIN / high)
    for rng in constraint.inputs:
        if rng.scale() / max(out.scale(), 1e-30) < low * MARGIN:
            changed += _widen(rng, out.scale() * low * MARGIN)
    return changed


def enforce(constraints, rounds=8):
    """Widen ranges until every constraint holds (widening one op's output can move its neighbours); return changes."""
    total = 0
    for _ in range(rounds):
        changed = sum(_enforce_one(c) for c in constraints)
        total += changed
        if not changed:
            break
    return total


def violations(constraints):
    """Names of the ops whose ratios are outside XNNPACK's limits (no margin)."""
    bad = []
    for c in constraints:
        out = max(c.output.scale(), 1e-30)
        scales = [r.scale() for r in c.inputs]
        if c.op == "MUL":
            ratios, (low, high) = [float(np.prod(scales)) * c.constant_scale / out], MUL_LIMITS
        else:
            ratios, (low, high) = [s / out for s in scales], ADD_LIMITS
        if not all(low <= r < high for r in ratios):
            bad.append(c.name)
    return bad
