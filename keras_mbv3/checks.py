"""Argument checks shared by layers, applications and recipes.

Each check raises ``ValueError`` (``TypeError`` for a wrong type) whose message
names the argument, the value given and what is allowed.
"""

import numbers


def fail(name, value, allowed, error=ValueError):
    raise error(f"Invalid `{name}`: received {name}={value!r}; allowed: {allowed}.")


class UnsupportedLayerError(ValueError):
    """A model holds a layer that quantization has no int8 rule for (named, with its class)."""


def unsupported_layer(layer, allowed, detail=""):
    """Raise ``UnsupportedLayerError`` naming ``layer``, its class (and ``detail``) and what is ``allowed``."""
    fail("model", f"layer {layer.name!r} ({type(layer).__name__}){detail}", allowed, UnsupportedLayerError)


def is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(name, value):
    if not is_int(value):
        fail(name, value, "a positive integer", TypeError)
    if value < 1:
        fail(name, value, "a positive integer")
    return int(value)


def odd_kernel(name, value):
    positive_int(name, value)
    if value % 2 == 0:
        fail(name, value, "an odd positive integer such as 1, 3, 5 or 7")
    return int(value)


def one_of(name, value, allowed):
    if value not in allowed:
        fail(name, value, "one of " + ", ".join(repr(a) for a in allowed))
    return value


def fraction(name, value, allow_none=False):
    """A number in (0, 1]."""
    if value is None and allow_none:
        return None
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        fail(name, value, "a number in (0, 1]" + (" or None" if allow_none else ""), TypeError)
    if not 0 < value <= 1:
        fail(name, value, "a number in (0, 1]" + (" or None" if allow_none else ""))
    return float(value)


def momentum(name, value, allow_none=False):
    """A BatchNormalization momentum: a number in (0, 1).

    0 would keep only the last batch's statistics and 1 would never update
    them; both are mistakes rather than settings.
    """
    if value is None and allow_none:
        return None
    allowed = "a number in (0, 1) such as 0.99 or 0.999" + (" or None" if allow_none else "")
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        fail(name, value, allowed, TypeError)
    if not 0 < value < 1:
        fail(name, value, allowed)
    return float(value)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def positive_number(name, value):
    if not _is_real(value):
        fail(name, value, "a positive number", TypeError)
    if not value > 0:
        fail(name, value, "a positive number")
    return float(value)


def in_range(name, value, low, high, low_open, high_open):
    """A number in the interval from ``low`` to ``high`` (each end open or closed)."""
    allowed = f"a number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if not _is_real(value):
        fail(name, value, allowed, TypeError)
    if (value <= low if low_open else value < low) or (value >= high if high_open else value > high):
        fail(name, value, allowed)
    return float(value)


def positive_numbers(name, value, length=None):
    """A tuple of positive numbers (of ``length`` items when given)."""
    allowed = "a list or tuple of " + ("" if length is None else f"{length} ") + "positive numbers"
    if not isinstance(value, (list, tuple)) or (length is not None and len(value) != length):
        fail(name, value, allowed)
    if not all(_is_real(v) and v > 0 for v in value):
        fail(name, value, allowed)
    return tuple(float(v) for v in value)
