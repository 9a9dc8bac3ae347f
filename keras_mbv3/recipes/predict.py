"""``mbv3 predict``: a model file on image files: top-k classes with names, or segmentation overlays."""

import os

import numpy as np
import tensorflow as tf

from keras_mbv3 import checks
from keras_mbv3.files import write_atomically
from keras_mbv3.recipes.evaluation import load_predictor


def read_image(path, size):
    """An RGB image file (PNG, JPEG, GIF, BMP) as float32 ``(size[0], size[1], 3)`` in [0, 255]; one clear error."""
    if not os.path.isfile(path):
        checks.fail("IMAGE", path, "an existing image file (not found)")
    try:
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as error:
        reason = error.message.split("}}")[-1].split("[Op:")[0].strip()  # without TensorFlow's op prefix
        checks.fail("IMAGE", path, f"a PNG, JPEG, GIF or BMP image ({reason})")
    return tf.image.resize(tf.cast(image, tf.float32), size).numpy()


def labels_of(path):
    """Class names from the TFLite metadata of a ``.tflite`` file, else None."""
    if not path.endswith(".tflite"):
        return None
    from keras_mbv3.quantization import read_metadata

    metadata = read_metadata(open(path, "rb").read())
    return metadata.labels if metadata else None


def predict_files(model_path, images, top_k=5, overlays=None, overwrite=False):
    """Run ``model_path`` on ``images`` (paths).

    Returns one dict per image: ``{"image", "top": [{"class", "name", "score"}]}`` for a classifier,
    ``{"image", "overlay", "classes": {name: pixel fraction}}`` for a segmentation model, whose
    overlay PNG (the image with a color per class) goes to the folder ``overlays``.
    """
    checks.positive_int("--top-k", top_k)
    predictor = load_predictor(model_path)
    if predictor.task is None or None in predictor.input_shape[:2]:
        checks.fail("--file", model_path, "a classifier or segmentation model with a fixed input size")
    classes = predictor.output_shape[-1]
    names = labels_of(model_path) or tuple(str(i) for i in range(classes))
    segmentation = predictor.task == "segmentation"
    if segmentation and overlays is None:
        checks.fail("--overlays", overlays, "a folder for the overlay PNGs of a segmentation model")
    batch = np.stack([read_image(path, predictor.input_shape[:2]) for path in images])  # every image checked first
    results = []
    for path, image, output in zip(images, batch, predictor(batch)):
        if not segmentation:
            order = np.argsort(-output)[:top_k]
            top = [{"class": int(i), "name": names[i], "score": round(float(output[i]), 4)} for i in order]
            results.append({"image": path, "top": top})
            continue
        mask = output.argmax(-1)
        target = os.path.join(overlays, os.path.splitext(os.path.basename(path))[0] + ".overlay.png")
        os.makedirs(overlays, exist_ok=True)
        write_atomically(overlay_png(image, mask, classes), target, overwrite)
        share = np.bincount(mask.ravel(), minlength=classes) / mask.size
        results.append({"image": path, "overlay": target,
                        "classes": {names[i]: round(float(share[i]), 4) for i in np.flatnonzero(share)}})  # fmt: skip
    return results


def overlay_png(image, mask, classes):
    """PNG bytes of ``image`` half-blended with a color per class of ``mask`` (class 0 left clear)."""
    from matplotlib import colormaps

    palette = (colormaps["tab20"](np.arange(classes) % 20)[:, :3] * 255).astype(np.float32)
    colored = np.where(mask[..., None] > 0, 0.5 * image + 0.5 * palette[mask], image)
    return tf.io.encode_png(np.clip(np.round(colored), 0, 255).astype(np.uint8)).numpy()


def describe(results):
    """The lines ``mbv3 predict`` prints."""
    lines = []
    for result in results:
        if "top" in result:
            lines.append(result["image"] + ": " + ", ".join(f"{t['name']} {t['score']:.3f}" for t in result["top"]))
        else:
            shares = ", ".join(f"{name} {share:.1%}" for name, share in result["classes"].items())
            lines.append(f"{result['image']}: {shares} -> {result['overlay']}")
    return lines
