"""``fake_quant``: TensorFlow's ``FakeQuantWithMinMaxVars(PerChannel)`` on every backend, bit for bit.

On TensorFlow it is the op itself (``keras.quantizers.fake_quant_with_min_max_vars``), which the
TFLite converter reads as the ranges of an int8 model. On JAX and PyTorch it is the same
computation step for step (``tensorflow/core/kernels/fake_quant_ops_functor.h``: the nudge, then
the per-tensor kernel's division by the scale or the per-channel kernel's product with the
inverse), so that a QAT model gives the same fake-quantized outputs wherever it runs. Keras'
backend-neutral path computes the same grid in another float order: Small's untrained QAT
logits at 96 px on JAX then differed from TensorFlow's by up to 7 int8 steps, on 58% of the
values; with this one, by none on PyTorch (tests/backends).

The gradient is TensorFlow's as well: the input's inside the nudged range (bounds included), none
for the range (our ranges move by moving averages, not by gradients, and a kernel's symmetric
bound clips nothing).

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
    rank = len(inputs.shape)
    grid = _nudged(ops.convert_to_tensor(low, "float32"), ops.convert_to_tensor(high, "float32"),
                   1 if narrow_range else 0, 2**NUM_BITS - 1)  # fmt: skip
    if axis is not None:
        shape = [1] * rank
        shape[axis % rank] = -1
        grid = [ops.reshape(value, shape) for value in grid]
    values = ops.cast(inputs, "float32")
    if backend == "torch":
        outputs = _torch_function().apply(values, *grid, axis is not None)
    else:
        outputs = _fake_quant_by_ops(values, *grid, axis is not None)
    return ops.cast(outputs, inputs.dtype)


def _nudged(low, high, quant_min, quant_max):
    """TensorFlow's ``Nudge``, in float32: ``[nudged_min, nudged_max, scale, inverse_scale, quant_zero]``.

    The range moves so that 0 falls on the grid; the inverse is computed from the range, not as ``1 / scale``.
    """
    low, high = ops.stop_gradient(low), ops.stop_gradient(high)
    levels = float(quant_max - quant_min)
    scale, inverse_scale = _divide(high - low, levels), levels / (high - low)
    zero_point_from_min = quant_min - low / scale
    # std::round of a value in [quant_min, quant_max] (>= 0): floor(x + 0.5)
    zero_point = ops.floor(ops.clip(zero_point_from_min, quant_min, quant_max) + 0.5)
    nudged_min, nudged_max = (quant_min - zero_point) * scale, (quant_max - zero_point) * scale
    quant_zero = ops.floor(-nudged_min * inverse_scale + 0.5)
    return [nudged_min, nudged_max, scale, inverse_scale, quant_zero]


def _divide(a, b):
    """``a / b`` rounded as IEEE division, also on JAX: XLA turns a division by a constant or a broadcast scalar into
    a product with its reciprocal (a step off TensorFlow's grid), unless the divisor is a full-size operand it cannot
    see through."""
    if keras.backend.backend() != "jax":
        return a / b
    import jax

    return a / jax.lax.optimization_barrier(ops.broadcast_to(ops.convert_to_tensor(b, "float32"), ops.shape(a)))


def _fake_quant_by_ops(x, nudged_min, nudged_max, scale, inverse_scale, quant_zero, per_channel):
    @ops.custom_gradient
    def forward(x):
        shifted = ops.maximum(ops.minimum(x, nudged_max), nudged_min) - nudged_min
        steps = shifted * inverse_scale if per_channel else _divide(shifted, scale)
        outputs = ops.floor(steps - quant_zero + 0.5) * scale

        def grad(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream
            inside = ops.logical_and(ops.greater_equal(x, nudged_min), ops.less_equal(x, nudged_max))
            return ops.where(inside, upstream, ops.zeros_like(upstream))

        return outputs, grad

    return forward(x)


@functools.cache
def _torch_function():
    import torch

    class FakeQuant(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, nudged_min, nudged_max, scale, inverse_scale, quant_zero, per_channel):
            clamped = torch.minimum(x, nudged_max)
            torch.maximum(clamped, nudged_min, out=clamped)
            ctx.save_for_backward(clamped == x)
            shifted = clamped.sub_(nudged_min)
            steps = shifted.mul_(inverse_scale) if per_channel else shifted.div_(scale)
            return steps.sub_(quant_zero).add_(0.5).floor_().mul_(scale)

        @staticmethod
        def backward(ctx, upstream):
            (inside,) = ctx.saved_tensors
            return upstream * inside, None, None, None, None, None, None

    return FakeQuant
