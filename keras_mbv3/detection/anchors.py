"""SSD default anchors, as torchvision's ``DefaultBoxGenerator``, in the TFLite post-process format."""

import math

import numpy as np

from keras_mbv3 import checks


def anchors_per_location(aspect_ratios=(2, 3)):
    """Anchors at each feature map location: two squares and two boxes per aspect ratio."""
    return 2 + 2 * len(checks.positive_numbers("aspect_ratios", aspect_ratios))


def scales(num_maps, min_scale=0.2, max_scale=0.95):
    """The anchor scale of each map, plus one more (the second square of the last map uses it).

    ``num_maps`` scales evenly spaced from ``min_scale`` to ``max_scale``, then 1.0;
    a single map gets ``[min_scale, max_scale]`` (torchvision's rule).
    """
    if num_maps == 1:
        return [min_scale, max_scale]
    return [min_scale + (max_scale - min_scale) * k / (num_maps - 1) for k in range(num_maps)] + [1.0]


def anchor_shapes(scale, next_scale, aspect_ratios=(2, 3)):
    """The ``(height, width)`` of the anchors at one location, in their fixed order.

    Square ``scale``, square ``sqrt(scale * next_scale)``, then for each ratio r
    the wide box (h = scale / sqrt(r), w = scale * sqrt(r)) and the tall one.
    """
    middle = math.sqrt(scale * next_scale)
    shapes = [(scale, scale), (middle, middle)]
    for ratio in aspect_ratios:
        root = math.sqrt(ratio)
        shapes += [(scale / root, scale * root), (scale * root, scale / root)]
    return shapes


def _feature_sizes(value):
    if not isinstance(value, (list, tuple)) or not value:
        checks.fail("feature_sizes", value, "a non-empty list of (height, width) pairs of positive integers")
    for size in value:
        if (not isinstance(size, (list, tuple)) or len(size) != 2
                or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):  # fmt: skip
            checks.fail("feature_sizes", value, "a non-empty list of (height, width) pairs of positive integers")
    return [tuple(int(s) for s in size) for size in value]


def default_anchors(feature_sizes, min_scale=0.2, max_scale=0.95, aspect_ratios=(2, 3), clip=True):
    """The default anchors of an SSD predicting from maps of ``feature_sizes``.

    As torchvision's ``DefaultBoxGenerator([aspect_ratios] * K, min_ratio=min_scale,
    max_ratio=max_scale, clip=clip)`` for K maps, anchor for anchor.

    Order: map by map, then row y, then column x, then the
    ``anchors_per_location(aspect_ratios)`` shapes of ``anchor_shapes`` in order;
    the order of a head's ``(batch, H, W, A * values)`` output reshaped to
    ``(batch, H * W * A, values)``, concatenated over the maps. Anchor centers are
    ``((y + 0.5) / H, (x + 0.5) / W)``.

    Args:
        feature_sizes: ``[(H, W), ...]``, one per feature map, finest first.
        min_scale, max_scale: the anchor sizes of the first and the last map, as
            fractions of the image side, ``0 < min_scale <= max_scale <= 1``.
        aspect_ratios: width / height ratios other than 1 (each gives two anchors).
        clip: clip anchor heights and widths to 1 (torchvision's default).

    Returns:
        float32 array ``(N, 4)`` of ``(ycenter, xcenter, height, width)``, normalized
        to the image size: the anchor format of TFLite_Detection_PostProcess.
    """
    sizes = _feature_sizes(feature_sizes)
    min_scale = checks.in_range("min_scale", min_scale, 0, 1, low_open=True, high_open=False)
    max_scale = checks.in_range("max_scale", max_scale, 0, 1, low_open=True, high_open=False)
    if max_scale < min_scale:
        checks.fail("max_scale", max_scale, f"a number in [min_scale, 1] = [{min_scale}, 1]")
    aspect_ratios = checks.positive_numbers("aspect_ratios", aspect_ratios)
    if not isinstance(clip, bool):
        checks.fail("clip", clip, "True or False", TypeError)
    map_scales = scales(len(sizes), min_scale, max_scale)
    per_map = []
    for k, (height, width) in enumerate(sizes):
        shapes = np.array(anchor_shapes(map_scales[k], map_scales[k + 1], aspect_ratios))
        if clip:
            shapes = np.clip(shapes, 0.0, 1.0)
        ys, xs = np.meshgrid((np.arange(height) + 0.5) / height, (np.arange(width) + 0.5) / width, indexing="ij")
        centers = np.stack([ys.ravel(), xs.ravel()], axis=-1)  # (H * W, 2), row-major
        per_map.append(np.concatenate([np.repeat(centers, len(shapes), 0), np.tile(shapes, (len(centers), 1))], -1))
    return np.concatenate(per_map, axis=0).astype(np.float32)
