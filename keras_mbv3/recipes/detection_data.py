"""Detection sources: the embedded digits-det, COCO-format folders and TensorFlow Datasets detection sets.

Each gives unbatched ``tf.data`` pairs ``(image, truth)``: the image float32
``(S, S, 3)`` in [0, 255] (resized to the model's square input; normalized boxes do
not change), ``truth`` a dict of ``boxes`` float32 ``(G, 4)`` normalized corners
``(ymin, xmin, ymax, xmax)`` and ``labels`` int32 ``(G,)`` class ids from 1 (0 is the
background), G varying from image to image. Sets whose objects may be mirrored
(photos, not digits) also hold the key ``MIRRORABLE`` in ``truth``: training flips them.
"""

import json
import os

import numpy as np
import tensorflow as tf

from keras_mbv3 import checks
from keras_mbv3.recipes import data as data_lib

MAX_DIGITS = 3  # per digits-det canvas
DIGIT_SCALES = (0.25, 0.6)  # side of a placed digit, as a fraction of the canvas
STROKE = 96  # pixel value from which a scan's pixel is part of the digit's box
MIRRORABLE = "mirrorable"
IMAGE_FORMATS = (".png", ".jpg", ".jpeg", ".gif", ".bmp")  # what tf.io.decode_image reads


def digits_detection(image_size=96, train_images=4000, val_images=500, val_fraction=0.2, seed=0,
                     scales=DIGIT_SCALES):  # fmt: skip
    """scikit-learn's digits placed on dark canvases: 1 to 3 digits each, ``scales`` (25-60%) of the side, little
    overlap.

    Training and validation canvases are made of disjoint scans (the digits split as
    ``digits``), deterministic for ``seed``. A box is the tight box of the digit's strokes.
    4,000 training canvases: with 1,200, SSDLite Small overfit (training loss 0.05, validation
    5.7 after 30 epochs at 96 px; mAP@.5 0.37); with 4,000 and random crops, 0.69 after 12 epochs.

    Returns:
        ``(train, val)``, each ``(images (N, S, S, 3) float32, boxes (N, 3, 4), labels (N, 3))``,
        rows past an image's digits zero (label 0).
    """
    scans, digits = data_lib.digit_scans()
    (train_scans, train_digits), (val_scans, val_digits) = data_lib.split_pairs(scans, digits, val_fraction, seed)
    if not 0 < scales[0] <= scales[1] <= 1:
        checks.fail("scales", scales, "(smallest, largest) side fractions with 0 < smallest <= largest <= 1")
    return (_canvases(train_scans, train_digits, train_images, image_size, scales, np.random.default_rng([seed, 1])),
            _canvases(val_scans, val_digits, val_images, image_size, scales, np.random.default_rng([seed, 2])))  # fmt: skip


def _canvases(scans, digits, count, size, scales, rng, tries=20):
    """``count`` canvases: every digit's place drawn first (no draw depends on a resized scan), then the scans
    resized by ``data.resized_by_side`` and painted."""
    places = []  # (canvas, slot, scan, side, top, left)
    for i in range(count):
        placed = []
        for j in range(int(rng.integers(1, MAX_DIGITS + 1))):
            for _ in range(tries):
                side = int(rng.integers(max(1, int(scales[0] * size)), int(scales[1] * size) + 1))
                top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
                square = (top, left, top + side, left + side)
                if all(_iou(square, other) < 0.1 for other in placed):
                    break
            else:
                continue
            placed.append(square)
            places.append((i, len(placed) - 1, int(rng.integers(len(scans))), side, top, left))
    images = np.zeros((count, size, size), "float32")
    boxes = np.zeros((count, MAX_DIGITS, 4), "float32")
    labels = np.zeros((count, MAX_DIGITS), "int32")
    chosen = [scans[k] for _, _, k, *_ in places]
    for indices, resized in data_lib.resized_by_side(chosen, [side for _, _, _, side, _, _ in places]):
        for n, digit in zip(indices, resized):  # painted in any order: np.maximum, a box per digit
            i, slot, k, side, top, left = places[n]
            region = images[i, top : top + side, left : left + side]
            np.maximum(region, digit, out=region)
            rows, columns = np.nonzero(digit > STROKE)
            tight = (top + rows.min(), left + columns.min(), top + rows.max() + 1, left + columns.max() + 1)
            boxes[i, slot] = np.array(tight, "float32") / size
            labels[i, slot] = digits[k] + 1
    return data_lib.grey_to_rgb(images), boxes, labels


def _iou(a, b):
    overlap = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return overlap / (area - overlap)


def from_arrays(images, boxes, labels):
    """Padded arrays (label 0 rows are padding) as ``(image, truth)`` pairs without the padding."""

    def unpad(image, image_boxes, image_labels):
        keep = image_labels > 0
        return image, {"boxes": tf.boolean_mask(image_boxes, keep), "labels": tf.boolean_mask(image_labels, keep)}

    return tf.data.Dataset.from_tensor_slices((images, boxes, labels)).map(unpad)


def median_box_side(pairs, sample=512):
    """The median side of the boxes (the square root of the area, a fraction of the image's side) in the first
    ``sample`` of the ``(image, truth)`` ``pairs``, or None where they hold no box. A sample, so that a large set
    (TensorFlow Datasets' COCO) is not read whole."""
    sides = [np.sqrt(np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0))
             for boxes in pairs.take(sample).map(lambda image, truth: truth["boxes"]).as_numpy_iterator()]  # fmt: skip
    sides = np.concatenate(sides) if sides else np.zeros(0)
    return float(np.median(sides)) if sides.size else None


def write_coco_folder(root, train, val, names):
    """Write padded arrays (``digits_detection``'s) as a COCO-format folder that ``coco_folder`` reads:
    ``root/train`` and ``root/val``, each with its PNGs and an ``annotations.json``; ``names`` the classes 1.. ."""
    from PIL import Image

    for split, (images, boxes, labels) in (("train", train), ("val", val)):
        folder = os.path.join(root, split)
        os.makedirs(folder)
        entries, annotations = [], []
        for i, (image, image_boxes, image_labels) in enumerate(zip(images, boxes, labels)):
            height, width = image.shape[:2]
            Image.fromarray(np.clip(np.round(image), 0, 255).astype(np.uint8)).save(os.path.join(folder, f"{i}.png"))
            entries.append({"id": i, "file_name": f"{i}.png", "height": height, "width": width})
            for (ymin, xmin, ymax, xmax), label in zip(image_boxes * [height, width, height, width], image_labels):
                if label:
                    annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(label),
                                        "bbox": [float(xmin), float(ymin), float(xmax - xmin), float(ymax - ymin)]})
        categories = [{"id": k, "name": str(name)} for k, name in enumerate(names, start=1)]
        with open(os.path.join(folder, "annotations.json"), "w") as f:
            json.dump({"images": entries, "annotations": annotations, "categories": categories}, f)
    return root


def coco_folder(path, image_size):
    """``path/train`` and ``path/val``, each with its images and a COCO ``annotations.json``.

    Categories are numbered 1.. in the order of their COCO ids (COCO's ids have gaps);
    crowd annotations are left out. Returns ``(train, val, labels)``, ``labels[0]`` the background.
    """
    data_lib.require_folder(path, "train", "val")
    splits = [_coco_split(os.path.join(path, split), path) for split in ("train", "val")]
    (train, train_names), (val, val_names) = splits
    if train_names != val_names:
        checks.fail("--data", path, f"the same categories in train/ and val/ ({train_names} vs {val_names})")
    read = lambda file, boxes, labels: (_read_image(file, image_size),  # noqa: E731
                                        {"boxes": boxes, "labels": labels, MIRRORABLE: True})
    return (*(_ragged_slices(*split).map(read) for split in (train, val)), ("background", *train_names))


def _coco_split(folder, path):
    """``((files, boxes, labels), names)`` of one split; any malformed entry is one clear error naming it."""
    annotations_path = os.path.join(folder, "annotations.json")
    try:
        with open(annotations_path) as f:
            coco = json.load(f)
        images, annotations, categories = coco["images"], coco.get("annotations", []), coco["categories"]
        ids = sorted(c["id"] for c in categories)
        names = tuple({c["id"]: str(c["name"]) for c in categories}[i] for i in ids)
        sizes = {image["id"]: (float(image["height"]), float(image["width"]), image["file_name"]) for image in images}
    except (OSError, ValueError, KeyError, TypeError) as error:
        checks.fail("--data", path, f"a COCO-format annotations.json in {folder!r} ({type(error).__name__}: {error})")
    if not images or not categories:
        checks.fail("--data", path, f"images and categories in {annotations_path!r} (found none)")
    number = {coco_id: k for k, coco_id in enumerate(ids, start=1)}
    per_image = {image_id: ([], []) for image_id in sizes}
    for a in annotations:
        if a.get("iscrowd", 0):
            continue
        if a.get("image_id") not in per_image or a.get("category_id") not in number or len(a.get("bbox", ())) != 4:
            checks.fail("--data", path, f"annotations with an image_id, a category_id and a bbox [x, y, w, h] of "
                        f"the images and categories listed in {annotations_path!r} (annotation {a.get('id')!r}: "
                        f"image {a.get('image_id')!r}, category {a.get('category_id')!r}, bbox {a.get('bbox')!r})")  # fmt: skip
        per_image[a["image_id"]][0].append(a["bbox"])
        per_image[a["image_id"]][1].append(number[a["category_id"]])
    files, boxes, labels = [], [], []
    for image_id, (height, width, name) in sizes.items():
        file = os.path.join(folder, name)
        if not os.path.isfile(file):
            checks.fail("--data", path, f"the images annotations.json names ({file!r} is missing)")
        if not file.lower().endswith(IMAGE_FORMATS):
            checks.fail("--data", path, f"images in {', '.join(IMAGE_FORMATS)} ({file!r})")
        pixel_boxes, classes = per_image[image_id]
        xywh = np.reshape(np.asarray(pixel_boxes, "float32"), (-1, 4))
        corners = np.stack([xywh[:, 1] / height, xywh[:, 0] / width, (xywh[:, 1] + xywh[:, 3]) / height,
                            (xywh[:, 0] + xywh[:, 2]) / width], axis=-1)  # fmt: skip
        files.append(file)
        boxes.append(np.clip(corners, 0.0, 1.0))
        labels.append(np.asarray(classes, "int32"))
    return (files, boxes, labels), names


def _ragged_slices(files, boxes, labels):
    """A dataset of ``(file, boxes (G, 4), labels (G,))`` with G varying per image."""
    signature = (tf.TensorSpec((), tf.string), tf.TensorSpec((None, 4), tf.float32), tf.TensorSpec((None,), tf.int32))
    dataset = tf.data.Dataset.from_generator(lambda: zip(files, boxes, labels), output_signature=signature)
    return dataset.apply(tf.data.experimental.assert_cardinality(len(files)))  # its size without reading it


def _read_image(file, image_size):
    image = tf.io.decode_image(tf.io.read_file(file), channels=3, expand_animations=False)
    return tf.image.resize(tf.cast(image, tf.float32), (image_size, image_size))


def tfds_detection(name, data_dir, image_size):
    """A TensorFlow Datasets detection set with ``objects/bbox`` and ``objects/label`` (``coco/2017``, ``voc/2007``),
    already in ``data_dir`` (never downloaded here). Crowd boxes (``objects/is_crowd``) are left out."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
        splits, features = builder.info.splits, builder.info.features
        label_names = features["objects"]["label"].names
        if "train" not in splits:
            raise ValueError("no train split")
    except Exception as error:  # tfds raises many kinds for a set it cannot find
        checks.fail("--data", f"tfds:{name}", f"a TensorFlow Datasets detection set (objects/bbox, objects/label) "
                    f"prepared in --data-dir={data_dir!r} ({error})")  # fmt: skip
    held_out = next((s for s in ("validation", "test") if s in splits), None)
    split = ["train", held_out] if held_out else ["train[:90%]", "train[90%:]"]
    train, val = builder.as_dataset(split=split, shuffle_files=False)

    def prepare(example):
        objects = example["objects"]
        keep = tf.logical_not(objects["is_crowd"]) if "is_crowd" in objects else tf.ones_like(objects["label"], tf.bool)
        image = tf.image.resize(tf.cast(example["image"], tf.float32), (image_size, image_size))
        if image.shape[-1] == 1:
            image = tf.image.grayscale_to_rgb(image)
        truth = {"boxes": tf.boolean_mask(tf.cast(objects["bbox"], tf.float32), keep),
                 "labels": tf.boolean_mask(tf.cast(objects["label"], tf.int32), keep) + 1, MIRRORABLE: True}  # fmt: skip
        return image[..., :3], truth

    return train.map(prepare), val.map(prepare), ("background", *label_names)


def random_crop(image, truth, seed, min_scale=0.6):
    """A random square-ish crop of 60-100% of the side, resized back; boxes whose center stays inside are kept,
    clipped to the crop (SSD's crop, deterministic for the stateless ``seed``)."""
    size = tf.shape(image)[:2]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
    scale = tf.random.stateless_uniform([], seeds[0], min_scale, 1.0)
    crop = tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32)
    offset = tf.cast(tf.floor(tf.random.stateless_uniform([2], seeds[1]) * tf.cast(size - crop + 1, tf.float32)),
                     tf.int32)  # fmt: skip
    cropped = tf.image.resize(image[offset[0] : offset[0] + crop[0], offset[1] : offset[1] + crop[1]], size)
    low = tf.cast(offset, tf.float32) / tf.cast(size, tf.float32)
    extent = tf.cast(crop, tf.float32) / tf.cast(size, tf.float32)
    boxes = (truth["boxes"] - tf.tile(low, [2])) / tf.tile(extent, [2])
    center = (boxes[:, :2] + boxes[:, 2:]) / 2
    keep = tf.reduce_all((center > 0) & (center < 1), axis=-1)
    boxes = tf.clip_by_value(tf.boolean_mask(boxes, keep), 0.0, 1.0)
    return cropped, {"boxes": boxes, "labels": tf.boolean_mask(truth["labels"], keep)}  # other keys: the caller's


def random_zoom_out(image, truth, seed, max_ratio=2.0, probability=0.5, min_side=0.1):
    """Shrink a ``probability`` share of the images onto a canvas of their mean colour ``ratio`` times their side
    (``ratio`` uniform in [1, ``max_ratio``]), at a random place: the objects get smaller, the input size stays.

    SSD's zoom-out (torchvision's ``RandomZoomOut``, side 1-4, half the images),
    capped per image so that no box gets smaller than ``min_side`` of the side
    (half the smallest anchor, 0.2: a smaller box overlaps no anchor enough to be
    learned). The image is resized, then padded, so the canvas is never resized.
    Deterministic for the stateless ``seed``.
    """
    size = tf.shape(image)[:2]
    side = tf.cast(size, tf.float32)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
    boxes = truth["boxes"]
    extents = tf.concat([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1], [1.0]], axis=0)
    cap = tf.clip_by_value(tf.reduce_min(extents) / min_side, 1.0, max_ratio)
    ratio = 1.0 + tf.random.stateless_uniform([], seeds[0]) * (cap - 1.0)
    inner = tf.minimum(tf.cast(tf.round(side / ratio), tf.int32), size)
    offset = tf.cast(tf.floor(tf.random.stateless_uniform([2], seeds[1]) * tf.cast(size - inner + 1, tf.float32)),
                     tf.int32)  # fmt: skip
    zoom = (tf.random.stateless_uniform([], seeds[2]) < probability) & tf.reduce_any(inner < size)

    def zoomed():
        fill = tf.reduce_mean(image, axis=[0, 1])
        padding = tf.concat([tf.stack([offset, size - inner - offset], axis=1), [[0, 0]]], axis=0)
        shrunk = tf.pad(tf.image.resize(image, inner) - fill, padding) + fill
        scale, shift = tf.cast(inner, tf.float32) / side, tf.cast(offset, tf.float32) / side
        return shrunk, boxes * tf.tile(scale, [2]) + tf.tile(shift, [2])

    moved_image, moved_boxes = tf.cond(zoom, zoomed, lambda: (image, boxes))
    moved_image.set_shape(image.shape)
    return moved_image, {"boxes": moved_boxes, "labels": truth["labels"]}  # other keys: the caller's


def horizontal_flip(image, truth, seed):
    """Mirror half of the images (for sets whose objects may be mirrored: not digits) and their boxes."""
    flip = tf.random.stateless_uniform([], seed) < 0.5
    boxes = truth["boxes"]
    mirrored = tf.stack([boxes[:, 0], 1.0 - boxes[:, 3], boxes[:, 2], 1.0 - boxes[:, 1]], axis=-1)
    return (tf.where(flip, tf.reverse(image, [1]), image),
            {"boxes": tf.where(flip, mirrored, boxes), "labels": truth["labels"]})  # fmt: skip
