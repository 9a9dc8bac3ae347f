"""keras_mbv3.optimizers.AdamW: the learning-rate schedule evaluated once per step, the same updates as Keras's."""

import numpy as np
import pytest

from keras_mbv3.backend import IS_KERAS_3, keras
from keras_mbv3.optimizers import AdamW
from keras_mbv3.recipes.training import _schedule


class CountedSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """The recipe's warm-up + cosine schedule, counting its evaluations."""

    def __init__(self):
        self.schedule, self.calls = _schedule(1e-2, 10), 0

    def __call__(self, step):
        self.calls += 1
        return self.schedule(step)


def variables_and_gradients(count=5):
    rng = np.random.default_rng(0)
    variables = [keras.Variable(rng.normal(size=(3, 2)).astype("float32")) if IS_KERAS_3 else
                 keras.backend.variable(rng.normal(size=(3, 2)).astype("float32")) for _ in range(count)]  # fmt: skip
    gradients = [rng.normal(size=(3, 2)).astype("float32") for _ in range(count)]
    if IS_KERAS_3:  # (the torch backend takes tensors only)
        gradients = [keras.ops.convert_to_tensor(g) for g in gradients]
    return variables, gradients


def apply_steps(optimizer, steps=3, schedule=None):
    """The variables after ``steps`` updates; ``schedule``'s count restarts after the first (tf_keras builds on it)."""
    variables, gradients = variables_and_gradients()
    for _ in range(steps):
        optimizer.apply_gradients(zip(gradients, variables))
        if schedule is not None and optimizer.iterations == 1:
            schedule.calls = 0
    return [np.asarray(v) for v in variables]


def test_the_schedule_is_evaluated_once_per_step():
    schedule = CountedSchedule()
    apply_steps(AdamW(schedule, weight_decay=1e-2), steps=3, schedule=schedule)
    assert schedule.calls == 2
    if IS_KERAS_3 and keras.backend.backend() != "torch":
        # what this class saves: Keras 3's own AdamW evaluates it for each variable's weight decay too (on torch,
        # Keras swaps in its own foreach AdamW, which evaluates it once)
        keras_schedule = CountedSchedule()
        apply_steps(keras.optimizers.AdamW(keras_schedule, weight_decay=1e-2), steps=3, schedule=keras_schedule)
        assert keras_schedule.calls == 2 * (1 + 5)


@pytest.mark.skipif(not IS_KERAS_3, reason="on tf_keras, keras_mbv3's AdamW is tf_keras's own")
def test_the_updates_are_keras_adamws_and_the_optimizer_reloads(tmp_path):
    """Bit for bit on TensorFlow and JAX. On torch Keras swaps in its own foreach AdamW, whose fused kernels round
    as the CPU's vector units do: equal on stop 44's machine, 1 ulp apart in one variable of five on this one (an
    Intel Xeon with AVX-512, 4 steps), so there the bound is 1 ulp."""
    ours = apply_steps(AdamW(_schedule(1e-2, 10), weight_decay=1e-2), steps=4)
    theirs = apply_steps(keras.optimizers.AdamW(_schedule(1e-2, 10), weight_decay=1e-2), steps=4)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_max_ulp(a, b, maxulp=1 if keras.backend.backend() == "torch" else 0)

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(AdamW(_schedule(1e-2, 10), weight_decay=1e-2), "mse")
    model.fit(np.ones((2, 3)), np.ones((2, 2)), verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert type(loaded.optimizer) is AdamW and loaded.optimizer.get_config() == model.optimizer.get_config()
