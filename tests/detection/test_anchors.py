"""Default anchors: values by hand, the order of a conv head's reshaped output, torchvision's scales."""

import math

import numpy as np
import pytest

from keras_mbv3.detection import anchors_per_location, default_anchors


def test_tiny_case_by_hand():
    # Two maps: scales 0.2 and 0.95, then 1.0 appended (torchvision's rule for K > 1 maps).
    anchors = default_anchors([(2, 2), (1, 1)], aspect_ratios=(2,))
    r2 = math.sqrt(2)
    first = [(0.2, 0.2), (math.sqrt(0.2 * 0.95),) * 2, (0.2 / r2, 0.2 * r2), (0.2 * r2, 0.2 / r2)]
    last = [(0.95, 0.95), (math.sqrt(0.95),) * 2, (0.95 / r2, 1.0), (1.0, 0.95 / r2)]  # 0.95 * sqrt(2) clipped to 1
    expected = [(cy, cx, h, w) for cy in (0.25, 0.75) for cx in (0.25, 0.75) for h, w in first]
    expected += [(0.5, 0.5, h, w) for h, w in last]
    assert anchors.dtype == np.float32 and anchors.shape == (20, 4)
    np.testing.assert_allclose(anchors, expected, rtol=1e-6)


def test_clip_false_keeps_sizes_above_one():
    anchors = default_anchors([(2, 2), (1, 1)], aspect_ratios=(2,), clip=False)
    np.testing.assert_allclose(anchors[-2:, 2:], [[0.95 / math.sqrt(2), 0.95 * math.sqrt(2)],
                                                  [0.95 * math.sqrt(2), 0.95 / math.sqrt(2)]], rtol=1e-6)  # fmt: skip


def test_default_ratios_give_six_per_location_and_torchvision_scales():
    sizes = [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    anchors = default_anchors(sizes)
    assert anchors_per_location() == anchors_per_location((2, 3)) == 6
    assert anchors_per_location(()) == 2 and anchors_per_location([2]) == 4
    assert len(anchors) == 6 * sum(h * w for h, w in sizes) == 3234
    # first square of each map: min + (max - min) * k / 5
    starts = np.cumsum([0] + [6 * h * w for h, w in sizes])[:-1]
    np.testing.assert_allclose(anchors[starts, 2], [0.2, 0.35, 0.5, 0.65, 0.8, 0.95], rtol=1e-6)
    np.testing.assert_allclose(anchors[starts[-1] + 1, 2], math.sqrt(0.95), rtol=1e-6)


def test_single_map_uses_min_and_max():
    anchors = default_anchors([(1, 1)], min_scale=0.3, max_scale=0.6, aspect_ratios=())
    np.testing.assert_allclose(anchors, [[0.5, 0.5, 0.3, 0.3], [0.5, 0.5, math.sqrt(0.18), math.sqrt(0.18)]], rtol=1e-6)


def test_order_is_that_of_a_reshaped_conv_head():
    sizes, ratios = [(3, 2), (2, 1)], (2, 3)
    per_location = anchors_per_location(ratios)
    anchors = default_anchors(sizes, aspect_ratios=ratios)
    start = 0
    for height, width in sizes:
        # a head output (H, W, A * 4) whose value at (y, x, a * 4 + c) names (y, x, a); reshaped as the model does
        y, x, a = np.meshgrid(np.arange(height), np.arange(width), np.arange(per_location), indexing="ij")
        rows = np.stack([y, x, a], -1).reshape(-1, 3)
        block = anchors[start:start + len(rows)]
        np.testing.assert_allclose(block[:, 0], (rows[:, 0] + 0.5) / height, rtol=1e-6)
        np.testing.assert_allclose(block[:, 1], (rows[:, 1] + 0.5) / width, rtol=1e-6)
        shapes = block[:per_location, 2:]
        np.testing.assert_array_equal(block[:, 2:], shapes[rows[:, 2]])
        start += len(rows)
    assert start == len(anchors)


@pytest.mark.parametrize("ratio", [2, 3, 0.5])
def test_ratio_pairs_are_wide_then_tall_with_area_of_the_scale(ratio):
    h, w = default_anchors([(1, 1)], min_scale=0.2, max_scale=0.4, aspect_ratios=(ratio,))[2, 2:]
    assert w / h == pytest.approx(ratio, rel=1e-5) and h * w == pytest.approx(0.04, rel=1e-5)
