"""``mbv3 predict``'s overlay PNGs: a segmentation mask or detected boxes drawn on the image."""

import os

import numpy as np
import tensorflow as tf

from keras_mbv3.files import write_atomically


def write(png, image_path, folder, overwrite):
    """Write ``png`` as ``folder/{image name}.overlay.png`` (never over a file unless ``overwrite``); its path."""
    target = os.path.join(folder, os.path.splitext(os.path.basename(image_path))[0] + ".overlay.png")
    os.makedirs(folder, exist_ok=True)
    write_atomically(png, target, overwrite)
    return target


def mask_png(image, mask, classes):
    """PNG bytes of ``image`` (H, W, 3) in [0, 255] half-blended with a color per class of ``mask`` (H, W)
    (class 0 left clear)."""
    from matplotlib import colormaps

    palette = (colormaps["tab20"](np.arange(classes) % 20)[:, :3] * 255).astype(np.float32)
    colored = np.where(mask[..., None] > 0, 0.5 * image + 0.5 * palette[mask], image)
    return tf.io.encode_png(np.clip(np.round(colored), 0, 255).astype(np.uint8)).numpy()


def boxes_png(image, boxes):
    """PNG bytes of ``image`` (H, W, 3) in [0, 255] with ``boxes`` (N, 4) ``[ymin, xmin, ymax, xmax]``
    (normalized) drawn in red."""
    drawn = tf.image.draw_bounding_boxes(image[None] / 255.0, np.clip(boxes[None], 0, 1),
                                         np.array([[1.0, 0.2, 0.2, 1.0]]))[0]  # fmt: skip
    return tf.io.encode_png(tf.cast(tf.round(tf.clip_by_value(drawn, 0, 1) * 255), tf.uint8)).numpy()
