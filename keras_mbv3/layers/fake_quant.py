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

On PyTorch an autograd function computes it in place: forward + backward of a (32, 56, 56, 72)
tensor on one core took 64 ms with PyTorch's ``fake_quantize_per_tensor_affine`` (tensor ranges),
39 ms with float ranges, 26 ms with this one (a multiply alone: 11 ms; its clamp is a minimum and a
maximum, since ``torch.clamp`` with tensor bounds took 15 ms where they take 3.7); with Keras' path the
QAT train step of Small at 224 took 2.47x the float one, with this one 1.29x (benchmarks/train_speed.py).
"""

import functools

from keras_mbv3.backend import keras

ops = keras.ops
NUM_BITS = 8


def fake_quant(inputs, low, high, narrow_range=False, axis=None):
    """``inputs`` fake-quantized to int8 on ``[low, high]``: per tensor, or per channel along ``axis``.

    Args:
        inputs: a float tensor.
        low, high: the range, scalars (per tensor) or vectors of ``inputs.shape[axis]`` values, with
            ``low <= 0 <= high`` and ``low < high``.
        narrow_range: quantize to [1, 255] instead of [0, 255] (symmetric int8 weights).
        axis: None, or the channel axis of a per-channel range.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return keras.quantizers.fake_quant_with_min_max_vars(
            inputs, low, high, num_bits=NUM_BITS, narrow_range=narrow_range, axis=axis
        )
    inputs = ops.convert_to_tensor(inputs)
    low, high = ops.convert_to_tensor(low, "float32"), ops.convert_to_tensor(high, "float32")
    if axis is not None:
        shape = [1] * len(inputs.shape)
        shape[axis % len(inputs.shape)] = -1
        low, high = ops.reshape(low, shape), ops.reshape(high, shape)
    quant_range = (1 if narrow_range else 0, 2**NUM_BITS - 1)
    values = ops.cast(inputs, "float32")
    if backend == "torch":
        outputs = _torch_function().apply(values, low, high, quant_range, axis is not None)
    else:
        outputs = _fake_quant_by_ops(values, low, high, quant_range, axis is not None)
    return ops.cast(outputs, inputs.dtype)


def _nudged(low, high, quant_min, quant_max):
    """TensorFlow's ``Nudge``, in float32: ``(nudged_min, nudged_max, scale, inverse_scale, quant_zero)``.

    The range moves so that 0 falls on the grid; the inverse is computed from the range, not as ``1 / scale``.
    """
    low, high = ops.stop_gradient(low), ops.stop_gradient(high)
    levels = float(quant_max - quant_min)
    scale, inverse_scale = _divide(high - low, levels), levels / (high - low)
    zero_point_from_min = ops.clip(quant_min - low / scale, quant_min, quant_max)
    # std::round (halves away from zero; here >= 0), exactly: floor(x + 0.5) rounds 0.49999997 up
    whole = ops.floor(zero_point_from_min)
    zero_point = whole + ops.cast(ops.greater_equal(zero_point_from_min - whole, 0.5), "float32")
    nudged_min, nudged_max = (quant_min - zero_point) * scale, (quant_max - zero_point) * scale
    quant_zero = ops.floor(-nudged_min * inverse_scale + 0.5)
    return nudged_min, nudged_max, scale, inverse_scale, quant_zero


def _range_gradient(upstream, outside, bound):
    """TensorFlow's gradient of a range bound: the upstream gradient of the values beyond it, summed to its shape."""
    summed = ops.where(outside, upstream, ops.zeros_like(upstream))
    axes = [a for a in range(len(upstream.shape)) if len(bound.shape) == 0 or bound.shape[a] == 1]
    return ops.reshape(ops.sum(summed, axis=axes, keepdims=len(bound.shape) > 0), ops.shape(bound))


def _divide(a, b):
    """``a / b`` rounded as IEEE division, also on JAX: XLA turns a division by a constant or a broadcast scalar into
    a product with its reciprocal (a step off TensorFlow's grid), unless the divisor is a full-size operand it cannot
    see through."""
    if keras.backend.backend() != "jax":
        return a / b
    import jax

    return a / jax.lax.optimization_barrier(ops.broadcast_to(ops.convert_to_tensor(b, "float32"), ops.shape(a)))


def _fake_quant_by_ops(x, low, high, quant_range, per_channel):
    nudged_min, nudged_max, scale, inverse_scale, quant_zero = _nudged(low, high, *quant_range)

    @ops.custom_gradient
    def forward(x, low, high):
        shifted = ops.maximum(ops.minimum(x, nudged_max), nudged_min) - nudged_min
        steps = shifted * inverse_scale if per_channel else _divide(shifted, scale)
        outputs = ops.floor(steps - quant_zero + 0.5) * scale

        def grad(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream
            below, above = ops.less(x, nudged_min), ops.greater(x, nudged_max)
            inside = ops.logical_not(ops.logical_or(below, above))
            return (ops.where(inside, upstream, ops.zeros_like(upstream)), _range_gradient(upstream, below, low),
                    _range_gradient(upstream, above, high))  # fmt: skip

        return outputs, grad

    return forward(x, low, high)


@functools.cache
def _torch_function():
    import torch

    class FakeQuant(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, low, high, quant_range, per_channel):
            nudged_min, nudged_max, scale, inverse_scale, quant_zero = _nudged(low, high, *quant_range)
            clamped = torch.minimum(x, nudged_max)
            torch.maximum(clamped, nudged_min, out=clamped)
            ctx.save_for_backward(clamped == x, x, nudged_min, nudged_max, low, high)
            shifted = clamped.sub_(nudged_min)
            steps = shifted.mul_(inverse_scale) if per_channel else shifted.div_(scale)
            return steps.sub_(quant_zero).add_(0.5).floor_().mul_(scale)

        @staticmethod
        def backward(ctx, upstream):
            inside, x, nudged_min, nudged_max, low, high = ctx.saved_tensors
            low_gradient = _range_gradient(upstream, x < nudged_min, low) if ctx.needs_input_grad[1] else None
            high_gradient = _range_gradient(upstream, x > nudged_max, high) if ctx.needs_input_grad[2] else None
            return upstream * inside, low_gradient, high_gradient, None, None

    return FakeQuant
