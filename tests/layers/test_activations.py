import numpy as np
import pytest

from keras_mbv3.layers import HardSigmoid, HardSwish

# A dense grid in steps of 0.01 that holds -3, 0 and 3 exactly.
GRID = (np.arange(-800, 801) / 100.0).astype("float32")


def relu6(x):
    return np.minimum(np.maximum(x, 0.0), 6.0)


def test_grid_holds_the_kinks():
    assert {-3.0, 0.0, 3.0} <= set(GRID.tolist())


@pytest.mark.parametrize(
    "layer_cls, reference",
    [
        (HardSigmoid, lambda x: relu6(x + 3) / 6),
        (HardSwish, lambda x: x * relu6(x + 3) / 6),
    ],
)
def test_matches_definition_on_dense_grid(layer_cls, reference):
    got = np.asarray(layer_cls()(GRID[None, :]))[0]
    np.testing.assert_allclose(got, reference(GRID.astype("float64")), rtol=1e-6, atol=1e-7)


def test_values_at_the_kinks():
    x = np.array([[-3.0, 0.0, 3.0]], "float32")
    np.testing.assert_array_equal(np.asarray(HardSigmoid()(x)), [[0.0, 0.5, 1.0]])
    np.testing.assert_array_equal(np.asarray(HardSwish()(x)), [[0.0, 0.0, 3.0]])
