"""``AdamW``: Keras's AdamW, its learning-rate schedule evaluated once per step.

Keras 3 evaluates a ``LearningRateSchedule`` every time an optimizer reads its
``learning_rate`` (``BaseOptimizer._get_current_learning_rate``), and AdamW's
weight decay reads it once per variable: a train step of MobileNetV3Small (142
variables) held 143 copies of the recipe's warm-up + cosine schedule, each an
``ops.cond`` with two branch graphs to trace and lower. The first ``fit`` of
Small at 32 px (2 steps, compiled state built before): 11.5-14.5 s with Keras's
AdamW, 6.9-8.1 s with this one, 7.0-7.2 s at a constant rate. Within one
``apply`` the step counter does not move (Keras increments it last), so the rate
computed at its start is the one every read would have computed: the updates
are the same, bit for bit. tf_keras keeps the step's rate in a variable itself
(``_current_learning_rate``): there ``AdamW`` is tf_keras's own.
"""

from keras_mbv3.backend import IS_KERAS_3, keras, register

if IS_KERAS_3:

    @register
    class AdamW(keras.optimizers.AdamW):
        """``keras.optimizers.AdamW`` (same arguments and config) whose schedule is evaluated once per ``apply``."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._rate_of_this_step = None

        def apply(self, grads, trainable_variables=None):
            # Under a MirroredStrategy the replicas' threads share this attribute: each sets the same value (the
            # step counter is mirrored), and a read after another replica cleared it computes it again.
            self._rate_of_this_step = super()._get_current_learning_rate()
            try:
                return super().apply(grads, trainable_variables)
            finally:
                self._rate_of_this_step = None

        def _get_current_learning_rate(self):
            rate = getattr(self, "_rate_of_this_step", None)
            return super()._get_current_learning_rate() if rate is None else rate

else:
    AdamW = keras.optimizers.AdamW
