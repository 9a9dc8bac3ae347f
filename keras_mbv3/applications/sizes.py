"""The input sizes each application builder takes, stated once.

The builders check ``input_shape`` against their rule and the recipe's tasks check
``--image-size`` against the same rule, so a size the model would refuse is
refused before any data loads, naming the flag the user typed.
"""

import dataclasses

from keras_mbv3 import checks

MINIMUM = 32  # five stride-2 stages: a 32 px input leaves a 1x1 map


@dataclasses.dataclass(frozen=True)
class SizeRule:
    """Input height and width allowed by a builder.

    Attributes:
        multiple: each side is a multiple of it (1: any side).
        static: the sides must be known when building (None refused).
        why: the reason for ``multiple`` / ``static``, said in the error.
    """

    multiple: int = 1
    static: bool = False
    why: str = ""

    def allowed(self):
        """What a side may be, in words."""
        text = f"an integer of at least {MINIMUM}"
        if self.multiple > 1:
            text = f"a multiple of {self.multiple}, at least {MINIMUM}"
        return f"{text} ({self.why})" if self.why else text

    def _side_ok(self, side):
        if side is None:
            return not self.static
        return checks.is_int(side) and side >= MINIMUM and side % self.multiple == 0

    def check_side(self, name, side):
        """``side`` (one int, such as ``--image-size``), else an error naming ``name`` (``TypeError`` for a non-int)."""
        if not checks.is_int(side):
            checks.fail(name, side, self.allowed(), TypeError)
        if not self._side_ok(side):
            checks.fail(name, side, self.allowed())
        return side

    def check_shape(self, name, input_shape):
        """``input_shape`` ``(height, width, channels)`` as a tuple, or a ``ValueError`` naming ``name``."""
        try:  # a tuple, list, tf.TensorShape or array
            shape = tuple(None if side is None else int(side) if checks.is_int(side) else side for side in input_shape)
        except TypeError:
            shape = None
        if shape is None or len(shape) != 3:
            checks.fail(name, input_shape, "(height, width, channels), channels last")
        if not all(self._side_ok(side) for side in shape[:2]):
            sides = "static heights and widths" if self.static else "heights and widths"
            checks.fail(name, input_shape, f"{sides} each {self.allowed()}")
        return shape


CLASSIFICATION = SizeRule()
SEGMENTATION = SizeRule(16, why="LR-ASPP joins the stride-8 and stride-16 maps")
DETECTION = SizeRule(32, static=True, why="SSDLite's stride; the anchors depend on the size")
