"""Activation ranges: XNNPACK's scale limits (both lines) and the Keras 3 engine's FakeQuant layer."""

import json

import numpy as np
import pytest
import tensorflow as tf

from keras_mbv3.backend import IS_KERAS_3
from keras_mbv3.quantization import xnnpack_limits
from keras_mbv3.quantization.xnnpack_limits import ADD_LIMITS, MARGIN, MUL_LIMITS, Constraint, Range, enforce, violations


def variable_range(low, high):
    return Range(tf.Variable(float(low)), tf.Variable(float(high)))


def mul_ratio(c):
    return np.prod([r.scale() for r in c.inputs]) * c.constant_scale / c.output.scale()


def test_a_mul_output_too_narrow_for_its_inputs_is_widened_inside_the_margin():
    gate, x, out = Range(0.0, 6.0, fixed=True), variable_range(-3, 3), variable_range(-1e-6, 1e-6)
    mul = Constraint("MUL", (gate, x), out, "mul")
    assert violations([mul]) == ["mul"] and mul_ratio(mul) > 1e4  # the untrained Small's case
    assert enforce([mul]) == 1
    assert MUL_LIMITS[0] * MARGIN <= mul_ratio(mul) < MUL_LIMITS[1] / MARGIN
    assert x.value() == pytest.approx((-3, 3)) and violations([mul]) == []
    low, high = out.value()
    assert low < 0 < high and high == pytest.approx(-low)  # scaled about 0, the shape kept


def test_an_add_input_too_narrow_for_the_output_is_widened_and_the_other_kept():
    wide, tiny, out = variable_range(-10, 10), variable_range(-1e-4, 1e-4), variable_range(-10, 10)
    add = Constraint("ADD", (wide, tiny), out, "add")
    assert violations([add]) == ["add"]
    enforce([add])
    assert violations([add]) == [] and wide.value() == pytest.approx((-10, 10))
    assert tiny.scale() / out.scale() >= ADD_LIMITS[0] * MARGIN


def test_enforcing_twice_changes_nothing_and_fixed_ranges_never_move():
    gate_input, gate = variable_range(-1e-5, 1e-5), Range(0.0, 6.0, fixed=True)
    constraints = [Constraint("ADD", (gate_input,), gate, "gate")]
    assert enforce(constraints) == 1 and enforce(constraints) == 0
    assert gate.value() == (0.0, 6.0)
    huge = Constraint("ADD", (variable_range(-1000, 1000),), Range(0.0, 6.0, fixed=True), "huge")
    enforce([huge])
    assert violations([huge]) == ["huge"]  # only the fixed output could move: reported, not hidden


keras_3_only = pytest.mark.skipif(not IS_KERAS_3, reason="the Keras 3 engine's layer")


@keras_3_only
def test_fake_quant_moves_its_range_in_training_only():
    from keras_mbv3.layers.quantized import FakeQuant

    layer = FakeQuant(name="fq")
    x = np.linspace(-1, 2, 64, dtype="float32").reshape(1, 64)
    layer(x, training=False)
    assert (float(layer.range_min), float(layer.range_max)) == (-6.0, 6.0)  # tfmot's starting range
    layer(x, training=True)
    decay = layer.ema_decay
    assert float(layer.range_min) == pytest.approx(decay * -6 + (1 - decay) * -1)
    assert float(layer.range_max) == pytest.approx(decay * 6 + (1 - decay) * 2)
    layer.range_min.assign(-1.0)
    layer.range_max.assign(2.0)
    out = np.asarray(layer(x, training=False))
    assert len(np.unique(out)) <= 256 and np.abs(out - x).max() <= 3.0 / 255  # int8 steps of the range


@keras_3_only
def test_fake_quant_fixed_range_and_floor_and_config():
    from keras_mbv3.layers.quantized import FakeQuant

    gate = FakeQuant(fixed_range=(0, 6), name="gate")
    x = np.linspace(0, 1, 32, dtype="float32").reshape(1, 32)
    gate(x, training=True)
    assert (float(gate.range_min), float(gate.range_max)) == (0.0, 6.0)
    floored = FakeQuant(floor=3.0, ema_decay=1e-9, name="floored")  # decay ~0: the batch range at once
    floored(x * 1e-3, training=True)
    assert (float(floored.range_min), float(floored.range_max)) == pytest.approx((-3.0, 3.0))
    for layer in (gate, floored):
        clone = FakeQuant.from_config(json.loads(json.dumps(layer.get_config())))
        assert clone.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="`fixed_range`"):
        FakeQuant(fixed_range=(1, 6))
    with pytest.raises(ValueError, match="`floor`"):
        FakeQuant(floor=-1)


def test_range_constraints_of_a_qat_model_name_its_adds_and_muls():
    from keras_mbv3.applications import MobileNetV3Small
    from keras_mbv3.quantization import quantize_model
    from keras_mbv3.quantization.qat import _engine

    qat = quantize_model(MobileNetV3Small(weights=None, input_shape=(32, 32, 3), classes=3))
    constraints = _engine().range_constraints(qat)
    ops = [c.op for c in constraints]
    # One constraint per int8 ADD and MUL of Small's export (test_qat.SMALL_INT8_OPS: ADD 25, MUL 28).
    assert ops.count("MUL") == 28 and ops.count("ADD") == 25
    assert all(isinstance(c.output, xnnpack_limits.Range) for c in constraints)


@keras_3_only
@pytest.mark.parametrize("low, high", [(-1.0, 1.5), (0.0, 6.0), (-0.123, 7.77), (-1e-3, 2e-3), (0.0, 0.0)])
def test_in_training_the_input_gradient_alone_is_the_ops_bit_for_bit(low, high):
    """On TensorFlow a range that takes no gradient (``input_gradient_only``: a moving range in training, a gate's
    constant one) gives the input's in one pass compiled by XLA, where the op's kernel takes three (its range's sums
    too). It is the op's bit for bit (NaN, and -0.0 beyond the range), eager and in a graph (whose optimizer made the
    nudge's division by 255 a product: a step off the kernel's scale on [0, 6], and a gradient passed at 6.0000005)."""
    from conftest import fake_quant_edge_inputs

    from keras_mbv3.layers.fake_quant import FUSED_GRADIENT_SIZE, fake_quant

    x, weights = fake_quant_edge_inputs(low, high, nan=True)
    repeats = -(-FUSED_GRADIENT_SIZE // x.size)  # one example as large as the fused gradient takes
    x, weights = np.tile(x, repeats)[None], np.tile(weights, repeats)[None]

    def gradient(a, function):
        with tf.GradientTape() as tape:
            tape.watch(a)
            total = tf.reduce_sum(function(a) * weights)
        return tape.gradient(total, a)

    theirs = gradient(tf.constant(x), lambda a: tf.quantization.fake_quant_with_min_max_vars(a, low, high)).numpy()
    variables = tf.Variable(low), tf.Variable(high)  # as in training (constants the optimizer folds exactly)
    ours = lambda a: gradient(a, lambda v: fake_quant(v, *variables, input_gradient_only=True))  # noqa: E731
    for result in (ours(tf.constant(x)), tf.function(ours)(tf.constant(x))):
        np.testing.assert_array_equal(result.numpy().view(np.int32), theirs.view(np.int32))
    if high > low:
        assert np.sum(np.signbit(theirs) & (theirs == 0)) >= 3  # -0.0 beyond the range
    else:  # [0, 0]: the op passes it all
        np.testing.assert_array_equal(theirs, weights)
