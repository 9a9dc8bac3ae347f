"""Channel rounding of the paper's reference code."""

from keras_mbv3 import checks


def make_divisible(value, divisor=8, min_value=None):
    """Round ``value`` to the nearest multiple of ``divisor``, never down by more than 10%.

    This is ``_make_divisible`` of the TensorFlow slim MobileNet code (and
    ``_depth`` of keras.applications), which sets every channel count of
    MobileNetV3 for a given width multiplier.

    Args:
        value: the unrounded channel count (a float such as ``16 * 0.75``).
        divisor: the multiple to round to, a positive integer.
        min_value: the smallest result; defaults to ``divisor``.

    Returns:
        int: a multiple of ``divisor``, at least ``min_value`` and at least 90% of ``value``.
    """
    checks.positive_int("divisor", divisor)
    if min_value is None:
        min_value = divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value
