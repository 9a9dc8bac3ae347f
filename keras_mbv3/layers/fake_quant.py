"""``fake_quant``: TensorFlow's ``FakeQuantWithMinMaxVars(PerChannel)`` on every backend, bit for bit.

On TensorFlow it is the op itself (``keras.quantizers.fake_quant_with_min_max_vars``), which the
TFLite converter reads as the ranges of an int8 model. On JAX and PyTorch it is the same
computation step for step (``tensorflow/core/kernels/fake_quant_ops_functor.h``: the nudge, then
the per-tensor kernel's division by the scale or the per-channel kernel's product with the
inverse), so that a QAT model gives the same fake-quantized outputs wherever it runs. Keras'
backend-neutral path computes the same grid in another float order: Small's untrained QAT
logits at 96 px on JAX then differed from TensorFlow's by up to 7 int8 steps, on 58% of the
values; with this one, by none (two models; tests/backends checks a small QAT model on JAX and
PyTorch).

The gradient is TensorFlow's as well: the input's inside the nudged range (bounds included); the
range's, the sum of the gradients beyond it (a kernel's bound ``max|w|``: its nudged range can fall
a float step short of it, and the largest weight then learns through the bound, as on TensorFlow).
In training, a range that takes no gradient (a moving range, a gate's constant one) gives on
TensorFlow the input's alone, one pass compiled by XLA: the op's gradient kernel also sums the
range's (two more passes over the tensor), and Keras runs the train step without XLA on a CPU. The
QAT step of Small at 224 went from 1.104x to 1.000x the float one (one core, one process, 15
interleaved steps).

On PyTorch an autograd function computes it in place, in torch (Keras' ops add 10-20 microseconds a
call), per tensor with the nudged range as numbers, and the input's gradient in one pass
(``hardtanh_backward`` a float step beyond the range; outside it the gradient is +0.0 where TensorFlow's
can be -0.0). Forward + backward from a layer's range variables on one core, side by side with the
0-d-tensor version before it: 44.6 against 75.8 ms on (32, 112, 112, 16), 46.6 against 68.9 ms on
(32, 56, 56, 72). The QAT train step of Small at 224 took 2.47x the float one with Keras' path; on
this machine 1.40x with that version and 1.07-1.11x with this one (interleaved steps in one process,
medians; benchmarks/train_speed.py: 1.11x and 1.15x in two runs).
"""

import functools

from keras_mbv3.backend import keras
from keras_mbv3.ops import relu6

ops = keras.ops
NUM_BITS = 8
# The smallest tensor, in values per example, whose gradient on TensorFlow is worth XLA's compile (``fake_quant``'s
# ``input_gradient_only``): a call costs about 20 microseconds more, (32, 1, 1, 96) 0.132 against 0.113 ms, and a shape
# about 0.1 s to compile (Small's QAT at 32 px took 4-6 s more to its first step with every tensor fused, and its steps
# 0.06 against 0.05 s); (32, 7, 7, 576) took 0.74 against 1.11 ms. Small at 224 has 96% of its values in larger ones.
FUSED_GRADIENT_SIZE = 2**14


def fake_quant(inputs, low, high, narrow_range=False, axis=None, input_gradient_only=False):
    """``inputs`` fake-quantized to int8 on ``[low, high]``: per tensor, or per channel along ``axis``.

    Args:
        inputs: a float tensor.
        low, high: the range, scalars (per tensor) or vectors of ``inputs.shape[axis]`` values, with
            ``low <= 0 <= high`` and ``low < high``, or ``[0, 0]`` (as on TensorFlow: outputs 0, the input's gradient
            whole).
        narrow_range: quantize to [1, 255] instead of [0, 255] (symmetric int8 weights).
        axis: None, or the channel axis of a per-channel range.
        input_gradient_only: True in training where the range is a statistic or a constant (no gradient reaches
            it). On TensorFlow the input's gradient is then one fused pass (``_tensorflow_fake_quant``); the forward
            graph carries a custom gradient, which an exported graph should not (export traces with False).
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        if input_gradient_only and axis is None and not narrow_range and _example_size(inputs) >= FUSED_GRADIENT_SIZE:
            return _tensorflow_fake_quant(inputs, low, high)
        return keras.quantizers.fake_quant_with_min_max_vars(
            inputs, low, high, num_bits=NUM_BITS, narrow_range=narrow_range, axis=axis
        )
    quant_range = (1 if narrow_range else 0, 2**NUM_BITS - 1)
    if backend == "torch":
        return _torch_fake_quant(inputs, low, high, quant_range, axis)
    inputs = ops.convert_to_tensor(inputs)
    low, high = ops.convert_to_tensor(low, "float32"), ops.convert_to_tensor(high, "float32")
    if axis is not None:
        shape = _channel_shape(len(inputs.shape), axis)
        low, high = ops.reshape(low, shape), ops.reshape(high, shape)
    outputs = _fake_quant_by_ops(ops.cast(inputs, "float32"), low, high, quant_range, axis is not None)
    return ops.cast(outputs, inputs.dtype)


def _example_size(inputs):
    """The number of values of one example of ``inputs`` (its static shape after the first axis), 0 where unknown."""
    size = 1
    for dimension in tuple(inputs.shape)[1:]:
        if dimension is None:
            return 0
        size *= int(dimension)
    return size


def _tensorflow_fake_quant(inputs, low, high):
    """TensorFlow's op forward (the converter reads it); back, the input's gradient alone, in one pass.

    The op's gradient kernel also sums the range's gradients, two more passes over the tensor whether or not they are
    needed, and TensorFlow's kernels ran its mask in four. On one core, (32, 112, 112, 16): 6.0 ms against 10.1.
    """
    import tensorflow as tf

    low, high = tf.cast(low, tf.float32), tf.cast(high, tf.float32)

    @tf.custom_gradient
    def forward(x, low, high):
        def grad(upstream):
            nudged_min, nudged_max = _nudged(low, high, 0, 2**NUM_BITS - 1)[:2]
            return _tensorflow_pass_between()(upstream, x, nudged_min, nudged_max, _unset(low, high)), None, None

        return tf.quantization.fake_quant_with_min_max_vars(x, low, high, num_bits=NUM_BITS), grad

    return tf.cast(forward(tf.cast(inputs, tf.float32), low, high), inputs.dtype)


@functools.cache
def _tensorflow_pass_between():
    """``upstream`` times (``low <= x <= high``, or all of it where ``unset``: a [0, 0] range), as TensorFlow's gradient
    kernel computes it: one pass compiled by XLA (TensorFlow's kernels take four)."""
    import tensorflow as tf

    @tf.function(jit_compile=True)
    def pass_between(upstream, x, low, high, unset):
        # the kernel's product, -0.0 beyond for a negative upstream (XLA makes a product with the mask a select)
        return tf.where(tf.logical_or(unset, tf.logical_and(x >= low, x <= high)), upstream, upstream * 0.0)

    return pass_between


def _channel_shape(rank, axis):
    """The shape that broadcasts a per-channel range along ``axis`` against a tensor of ``rank`` dimensions."""
    shape = [1] * rank
    shape[axis % rank] = -1
    return shape


def _nudged(low, high, quant_min, quant_max, xp=ops):
    """TensorFlow's ``Nudge``, in float32: ``(nudged_min, nudged_max, scale, inverse_scale, quant_zero)``.

    The range moves so that 0 falls on the grid; the inverse is computed from the range, not as ``1 / scale``.
    ``xp``: ``keras.ops`` for backend tensors, or numpy for float32 arrays (PyTorch's path: a few microseconds where
    Keras' ops on 0-d tensors took 0.2 ms a fake quantization).
    """
    levels = float(quant_max - quant_min)
    scale = _divide(high - low, levels) if xp is ops else (high - low) / levels  # numpy divides as IEEE does
    inverse_scale = levels / (high - low)
    zero_point_from_min = xp.clip(quant_min - low / scale, quant_min, quant_max)
    # std::round (halves away from zero; here >= 0), exactly: floor(x + 0.5) rounds 0.49999997 up
    whole = xp.floor(zero_point_from_min)
    zero_point = xp.where(xp.greater_equal(zero_point_from_min - whole, 0.5), whole + 1.0, whole)
    nudged_min, nudged_max = (quant_min - zero_point) * scale, (quant_max - zero_point) * scale
    quant_zero = xp.floor(-nudged_min * inverse_scale + 0.5)
    return nudged_min, nudged_max, scale, inverse_scale, quant_zero


def _range_gradient(upstream, outside, bound):
    """TensorFlow's gradient of a range bound: the upstream gradient of the values beyond it, summed to its shape."""
    summed = ops.where(outside, upstream, ops.zeros_like(upstream))
    axes = [a for a in range(len(upstream.shape)) if len(bound.shape) == 0 or bound.shape[a] == 1]
    return ops.reshape(ops.sum(summed, axis=axes, keepdims=len(bound.shape) > 0), ops.shape(bound))


def _divide(a, b):
    """``a / b`` rounded as IEEE division, also in compiled graphs: XLA (JAX) and TensorFlow's graph optimizer turn a
    division by a constant or a broadcast scalar into a product with its reciprocal (6 / 255 gave 0.023529414, a step
    off TensorFlow's kernels' 0.023529412), unless the divisor is an operand they cannot see through."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return a / jax.lax.optimization_barrier(ops.broadcast_to(ops.convert_to_tensor(b, "float32"), ops.shape(a)))
    if backend == "tensorflow":
        import tensorflow as tf

        b = tf.convert_to_tensor(b, tf.float32)
        return a / tf.raw_ops.PlaceholderWithDefault(input=b, shape=b.shape)
    return a / b


def _unset(low, high, xp=ops):
    """Where the range is [0, 0]: TensorFlow's kernels give 0 there and pass the whole gradient to the input (a ReLU
    that gave only zeros in calibration leaves its range so; the nudge divides by a scale of 0). ``xp``: as
    ``_nudged``'s."""
    return xp.logical_and(xp.equal(low, 0.0), xp.equal(high, 0.0))


def _fake_quant_by_ops(x, low, high, quant_range, per_channel):
    nudged = _nudged(ops.stop_gradient(low), ops.stop_gradient(high), *quant_range)
    nudged_min, nudged_max, scale, inverse_scale, quant_zero = nudged

    @ops.custom_gradient
    def forward(x, low, high):
        shifted = ops.maximum(ops.minimum(x, nudged_max), nudged_min) - nudged_min
        steps = shifted * inverse_scale if per_channel else _divide(shifted, scale)
        outputs = ops.floor(steps - quant_zero + 0.5) * scale
        outputs = ops.where(_unset(low, high), ops.zeros_like(outputs), outputs)  # the nudge made NaN

        def grad(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream
            below, above = ops.less(x, nudged_min), ops.greater(x, nudged_max)
            inside = ops.logical_not(ops.logical_or(below, above))
            return (ops.where(inside, upstream, ops.zeros_like(upstream)), _range_gradient(upstream, below, low),
                    _range_gradient(upstream, above, high))  # fmt: skip

        return outputs, grad

    return forward(x, low, high)


def batch_range(values):
    """``(min(values), max(values))``, in one pass on PyTorch (``torch.aminmax``: 1.7 ms against 3.1 ms for the two
    on a (32, 112, 112, 16) tensor, one core) and on JAX (one variadic reduce: XLA's CPU reads the tensor once per
    reduction, and Small's QAT train step at 224, batch 32, accessed 7.10 GB with two, 6.26 GB with one; float 6.07)."""
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        return torch.aminmax(values)
    if backend == "jax":
        return _jax_min_max(values)
    return ops.min(values), ops.max(values)


def _jax_min_max(values):
    import jax
    import jax.numpy as jnp

    values = jnp.asarray(values)

    def both(a, b):
        return jnp.minimum(a[0], b[0]), jnp.maximum(a[1], b[1])

    extremes = (jnp.array(jnp.inf, values.dtype), jnp.array(-jnp.inf, values.dtype))
    return jax.lax.reduce((values, values), extremes, both, tuple(range(values.ndim)))


def _torch_fake_quant(inputs, low, high, quant_range, axis):
    """``fake_quant`` on PyTorch, in torch: Keras' ops cost 10-20 microseconds a call on top of torch's (a kernel's
    fake quantization, forward and backward, took 0.6 ms through them)."""
    inputs = ops.convert_to_tensor(inputs)
    low, high = ops.convert_to_tensor(low, "float32"), ops.convert_to_tensor(high, "float32")
    if axis is not None:
        shape = _channel_shape(inputs.dim(), axis)
        low, high = low.reshape(shape), high.reshape(shape)
    outputs = _torch_function().apply(inputs.float(), low, high, quant_range, axis is not None)
    return outputs.to(inputs.dtype)


def _beyond(bound, direction):
    """The float32 value one step beyond ``bound`` (a number) towards ``direction``; beyond 0, the smallest normal
    float, which flush-to-zero (``torch.set_flush_denormal``) does not read as 0 (a subnormal input beyond a bound of
    0 then passes its gradient, where TensorFlow's does not)."""
    import numpy as np

    if bound == 0:
        return float(np.copysign(np.finfo(np.float32).tiny, direction))
    return np.nextafter(np.float32(bound), np.float32(direction)).item()


def _torch_to_grid_(steps, quant_zero, scale):
    """TensorFlow's kernels after their steps, in place: ``floor(steps - quant_zero + 0.5) * scale``, two roundings
    (one add of ``0.5 - quant_zero`` rounds differently: steps 0.49999997 with zero point 1)."""
    return steps.sub_(quant_zero).add_(0.5).floor_().mul_(scale)


def _torch_quantize_(clamped, nudged_min, scale, quant_zero):
    """TensorFlow's per-tensor kernel after its clamp, in place on ``clamped`` (the range's numbers as floats)."""
    import torch

    divisor = torch.tensor(scale, device=clamped.device)  # CUDA divides by a number as a product with 1 / it
    return _torch_to_grid_(clamped.sub_(nudged_min).div_(divisor), quant_zero, scale)


@functools.cache
def _torch_function():
    import numpy as np
    import torch

    def range_gradient(upstream, outside, bound):
        """``_range_gradient`` in torch: through Keras' ops the kernels' range gradients took 28 ms more of the QAT
        step of Small at 224 (1.263 against 1.235 s, medians of 6 interleaved steps)."""
        summed = torch.where(outside, upstream, 0.0)
        if bound.dim() == 0:
            return summed.sum()
        return summed.sum(dim=[axis for axis in range(summed.dim()) if bound.shape[axis] == 1], keepdim=True)

    class FakeQuant(torch.autograd.Function):
        """In place, and per tensor with the nudged range as numbers: ``torch.clamp`` with numbers took 3.0 ms on a
        (32, 112, 112, 16) tensor where ``torch.minimum`` with a 0-d tensor took 10.7, a product with a mask 9.4."""

        @staticmethod
        def forward(ctx, x, low, high, quant_range, per_channel):
            low_values, high_values = low.detach().cpu().numpy(), high.detach().cpu().numpy()
            with np.errstate(divide="ignore", invalid="ignore"):  # a [0, 0] range: the nudge divides by 0
                nudged_min, nudged_max, scale, inverse_scale, quant_zero = _nudged(
                    low_values, high_values, *quant_range, xp=np
                )
            unset = _unset(low_values, high_values, xp=np)
            ctx.save_for_backward(x, low, high)
            ctx.per_channel = per_channel
            ctx.unset = not per_channel and bool(unset)
            if ctx.unset:
                ctx.bounds = float("nan"), float("nan")  # no value compares beyond them
                return torch.zeros_like(x)
            if per_channel:
                nudged_min, nudged_max, scale, inverse_scale, quant_zero = (
                    torch.from_numpy(values).to(x.device)
                    for values in (nudged_min, nudged_max, scale, inverse_scale, quant_zero)
                )
                clamped = torch.minimum(x, nudged_max)
                steps = torch.maximum(clamped, nudged_min, out=clamped).sub_(nudged_min).mul_(inverse_scale)
                outputs = _torch_to_grid_(steps, quant_zero, scale)
                if unset.any():  # a kernel's range never is ([-max|w|, max|w|], at least 1e-8): no copy to the device
                    outputs.masked_fill_(torch.from_numpy(unset).to(x.device), 0)
            else:  # float32 numbers, exactly: torch computes with them in float32
                nudged_min, nudged_max, scale, quant_zero = (
                    float(nudged_min), float(nudged_max), float(scale), float(quant_zero)
                )
                outputs = _torch_quantize_(torch.clamp(x, nudged_min, nudged_max), nudged_min, scale, quant_zero)
            ctx.bounds = nudged_min, nudged_max
            return outputs

        @staticmethod
        def backward(ctx, upstream):
            x, low, high = ctx.saved_tensors
            nudged_min, nudged_max = ctx.bounds
            needs_x, needs_low, needs_high = ctx.needs_input_grad[:3]
            masks_x = needs_x and ctx.per_channel  # per tensor, hardtanh_backward compares by itself
            below = x < nudged_min if masks_x or needs_low else None
            above = x > nudged_max if masks_x or needs_high else None
            x_gradient = None
            if masks_x:
                x_gradient = upstream.masked_fill(below | above, 0.0)
            elif needs_x and ctx.unset:
                x_gradient = upstream.clone()
            elif needs_x:
                # hardtanh's gradient passes strictly inside its bounds: a float step beyond the nudged range, that is
                # TensorFlow's (bounds included), in one pass (NaN inputs aside: TensorFlow gives them 0)
                outer = _beyond(nudged_min, -np.inf), _beyond(nudged_max, np.inf)
                x_gradient = torch.ops.aten.hardtanh_backward(upstream, x, *outer)
            low_gradient = range_gradient(upstream, below, low) if needs_low else None
            high_gradient = range_gradient(upstream, above, high) if needs_high else None
            return x_gradient, low_gradient, high_gradient, None, None

    return FakeQuant


def gate_fake_quant(inputs, low, high, training=False):
    """``fake_quant(relu6(inputs + 3), low, high)``: a ``HardGate`` and its output's int8 range, TensorFlow's values and
    gradients (relu6's strictly inside (0, 6), the range's inside it, bounds included). ``training``: as
    ``fake_quant``'s ``input_gradient_only``.

    On PyTorch one autograd function: one new tensor and eight passes forward (the clamps of relu6 and of the range
    in one), one pass back, where the two layers took three new tensors and nine passes forward, two back. Small's 19
    gates at 224, batch 32, forward and backward on one core: 70 against 145 ms. On JAX XLA fuses the two layers'
    ops as well: a custom gradient from the input alone measured the same (QAT / float 1.058 against 1.056, one
    process, 5 interleaved steps; the two layers 1.042).
    """
    if keras.backend.backend() == "torch" and keras.backend.standardize_dtype(inputs.dtype) == "float32":
        return _torch_gate(float(low), float(high)).apply(ops.convert_to_tensor(inputs))
    return fake_quant(relu6(inputs + 3.0), low, high, input_gradient_only=training)


def _gate_input_bounds(nudged_max):
    """``(a, b)``, numbers: for float32 ``x``, relu6's gradient (``0 < fl(x + 3) < 6``) and the range's (relu6 at most
    ``nudged_max``) pass together exactly where ``a < x < b``, one interval since ``fl(x + 3)`` grows with x (PyTorch's
    ``hardtanh_backward`` then computes the gate's gradient in one pass)."""
    import numpy as np

    f32 = np.float32

    def first_reaching(target):  # the smallest float32 x with fl(x + 3) >= target
        x = f32(target) - f32(3)
        while f32(x + f32(3)) >= target:
            x = np.nextafter(x, f32(-np.inf))
        while f32(x + f32(3)) < target:
            x = np.nextafter(x, f32(np.inf))
        return x

    top = f32(min(6.0, _beyond(nudged_max, np.inf)))
    return np.nextafter(first_reaching(f32(_beyond(0.0, np.inf))), f32(-np.inf)).item(), first_reaching(top).item()


@functools.cache
def _torch_gate(low, high):
    """The autograd function of ``gate_fake_quant`` on ``[low, high]`` (numbers), its nudge and bounds computed once."""
    import numpy as np
    import torch

    nudged_min, nudged_max, scale, _, quant_zero = (
        float(v) for v in _nudged(np.float32(low), np.float32(high), 0, 2**NUM_BITS - 1, xp=np)
    )
    # relu6 then the range's clamp is one clamp: the nudged range holds 0, so nudged_min <= 0 <= nudged_max
    lowest, highest = max(0.0, nudged_min), min(6.0, nudged_max)
    below, above = _gate_input_bounds(nudged_max)

    class HardGateFakeQuant(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return _torch_quantize_(torch.add(x, 3.0).clamp_(lowest, highest), nudged_min, scale, quant_zero)

        @staticmethod
        def backward(ctx, upstream):
            (x,) = ctx.saved_tensors
            return torch.ops.aten.hardtanh_backward(upstream, x, below, above)

    return HardGateFakeQuant
