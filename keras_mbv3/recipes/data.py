"""Input pipelines (tf.data): the embedded digits, image folders, TensorFlow Datasets, segmentation sets.

Every source becomes a ``Data``: batched, prefetched train and validation
pipelines of float32 RGB images in [0, 255] (the models rescale them) with
the targets of the task (a ``keras_mbv3.recipes.tasks.Task``, which reads its sources with
the readers here and calls ``pipelines``). Splits, the
shuffling and the augmentation are deterministic for a given seed: a rerun of
a recipe with the same ``--seed`` gives the same figures on the same machine.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from keras_mbv3 import checks
from keras_mbv3.backend import keras
from keras_mbv3.recipes.settings import EMBEDDED

DIGITS_CLASSES = 10
DIGIT_NAMES = tuple(str(d) for d in range(DIGITS_CLASSES))
EMBEDDED_SETS = tuple(EMBEDDED.values())
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


@dataclasses.dataclass
class Data:
    """Batched pipelines and what the model needs to know about them."""

    train: tf.data.Dataset
    val: tf.data.Dataset
    evaluation: tf.data.Dataset  # the validation split with what the task's evaluator compares with (its truth)
    classes: int
    task: object  # the tasks.Task that made the pairs (its NAME is the --task value)
    train_size: int
    val_size: int
    name: str  # the --data value
    labels: tuple  # class names in index order (folder names, TFDS names, digits)
    image_shape: tuple  # (H, W, 3)
    holdout: tf.data.Dataset = None  # training images left out of ``train``, unaugmented (``load(holdout=N)``)

    def whole_batches(self, batch_size):
        """These pipelines in full batches only (the last, partial batch of each split dropped).

        For ``fit`` over several processes: Keras splits each global batch between
        them, and a partial last batch left one process a step short while the other
        waited for it in a collective (digits: 1,438 images in batches of 64, the
        processes 23 and 22 steps, then a hang).
        """
        return self.whole_batches_of(batch_size, "train", "val")

    def whole_batches_of(self, batch_size, *splits):
        """``whole_batches`` of ``splits`` (``"train"``, ``"val"``) only; their number of batches stays known (Keras'
        progress bar and epoch ends: ``rebatch`` alone leaves it unknown, and Keras warned that the input ran out).
        A split smaller than one batch is refused: it would give no batch at all."""
        sizes = {"train": self.train_size, "val": self.val_size}
        smaller = {split: sizes[split] for split in splits if sizes[split] < batch_size}
        if smaller:
            found = ", ".join(f"{n} {split} images" for split, n in smaller.items())
            checks.fail("--batch-size", batch_size, f"at most the images of each split, since several processes take "
                        f"whole batches only ({self.name}: {found})")  # fmt: skip
        return dataclasses.replace(self, **{split: getattr(self, split).rebatch(batch_size, drop_remainder=True).apply(
            tf.data.experimental.assert_cardinality(sizes[split] // batch_size)) for split in splits})  # fmt: skip

    def images(self, limit):
        """Up to ``limit`` training images (calibration of int8 ranges)."""
        return np.stack([x for x, _ in self.train.unbatch().take(limit).as_numpy_iterator()])


def steps_per_epoch(images, batch_size, whole=False):
    """The training steps of one epoch over ``images`` in batches of ``batch_size``: the last partial batch
    counted, or left out if ``whole``."""
    return images // batch_size if whole else -(-images // batch_size)


def pipelines(task, data, train, val, labels, image_size=32, batch_size=64, seed=0, holdout=0, repeatable=False):
    """``Data`` of a task's sources (``tasks.Task.load`` reads them, then calls this).

    Args:
        task: the ``tasks.Task``: its ``augment`` (training), ``target`` and ``truth`` make the pairs.
        data: the ``--data`` value (the ``Data``'s name and the messages').
        train, val, labels: the task's ``sources``.
        image_size: side of the square images fed to the model.
        holdout: training images (drawn at random for ``seed``) kept out of ``train`` and given unaugmented as
            ``holdout`` (NetAdapt scores its proposals on them; the validation split stays unseen).
        repeatable: every pass over ``train`` gives the same batches, augmented alike (NetAdapt fine-tunes each
            proposal on the same ones); otherwise each pass shuffles and augments anew.
    """
    train_size, val_size, classes = _size(train), _size(val), len(labels)
    held = None
    if holdout:
        checks.positive_int("holdout", holdout)
        if holdout >= train_size:
            checks.fail("holdout", holdout, f"fewer than the {train_size} training images of {data!r}")
        train, held = split_off(train, train_size, holdout, seed)
        held = _pipeline(held.cache(), task, classes, batch_size, training=False, seed=seed, size=holdout)
        train_size -= holdout
    return Data(
        train=_pipeline(train, task, classes, batch_size, training=True, seed=seed, size=train_size,
                        repeatable=repeatable),
        val=_pipeline(val, task, classes, batch_size, training=False, seed=seed, size=val_size),
        evaluation=val.map(lambda x, y: (x, task.truth(y, classes))).padded_batch(batch_size).prefetch(tf.data.AUTOTUNE),
        classes=classes, task=task, train_size=train_size, val_size=val_size, name=data, labels=tuple(labels),
        image_shape=(image_size, image_size, 3), holdout=held,
    )  # fmt: skip


def split_off(dataset, size, count, seed):
    """``(rest, held)``: ``count`` of the ``size`` elements of ``dataset``, drawn at random for ``seed`` (whatever
    TensorFlow's global seed), and the others, each in the dataset's order."""
    held = np.zeros(size, bool)
    held[np.random.default_rng(seed).permutation(size)[:count]] = True
    held = tf.constant(held)
    indexed = dataset.enumerate()

    def is_held(index, element):
        return tf.gather(held, index)

    def is_kept(index, element):
        return tf.logical_not(tf.gather(held, index))

    def element_of(index, element):
        return element

    return indexed.filter(is_kept).map(element_of), indexed.filter(is_held).map(element_of)


def slices(images, targets):
    return tf.data.Dataset.from_tensor_slices((images, targets))


def _size(dataset):
    size = int(dataset.cardinality())
    return size if size >= 0 else int(dataset.reduce(0, lambda n, _: n + 1))


def _pipeline(dataset, task, classes, batch_size, training, seed, size, repeatable=False):
    if training:
        dataset = dataset.shuffle(min(size, 10_000), seed=seed, reshuffle_each_iteration=not repeatable)
        # A stateless crop per image with a seed drawn in order: the same augmentation on
        # every run for a given --seed (a stateful op in a parallel map draws in thread order).
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=not repeatable).batch(2)
        dataset = tf.data.Dataset.zip(dataset, seeds).map(lambda pair, seed: task.augment(*pair, seed),
                                                          num_parallel_calls=tf.data.AUTOTUNE)  # fmt: skip
    dataset = dataset.map(lambda x, y: (x, task.target(y, classes, x.shape)), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def translate(image, seed):
    """A random translation by up to 2 pixels (zero fill), all channels alike (no flips: digits and text must not be
    mirrored)."""
    padded = tf.pad(image, [[2, 2], [2, 2], [0, 0]])
    return tf.image.stateless_random_crop(padded, tf.shape(image), seed)


def grey_to_rgb(images):
    """``(N, H, W)`` grey images as ``(N, H, W, 3)`` RGB (np.stack: 10x faster than np.repeat on a trailing axis,
    1.5 s against 0.16 for digits-det's 4,000 canvases of 96 px)."""
    return np.stack([images] * 3, axis=-1)


def resized_by_side(scans, sides):
    """Yields ``(indices, digits (n, side, side))``: each scan resized (bilinear) to its square ``sides[index]``,
    one ``tf.image.resize`` call per distinct side, batch by batch (the same pixels as a call per scan, which took
    about 4 s for digits-det's 9,000 digits at 96 px)."""
    for side in sorted(set(sides)):
        indices = [index for index, s in enumerate(sides) if s == side]
        batch = np.stack([scans[index] for index in indices])[..., None]
        yield indices, tf.image.resize(batch, (side, side), method="bilinear").numpy()[..., 0]


def digits(image_size=32, val_fraction=0.2, seed=0):
    """scikit-learn's handwritten digits (1,797 real 8x8 scans, shipped in its wheel) as RGB images.

    Returns:
        ``(train, val)`` pairs of numpy arrays ``(images, labels)``: images
        ``(N, image_size, image_size, 3)`` float32 in [0, 255], labels int.
    """
    images, labels = digit_scans()
    images = tf.image.resize(images[..., None], (image_size, image_size), method="bilinear").numpy()
    return split_pairs(grey_to_rgb(np.clip(images[..., 0], 0, 255)), labels, val_fraction, seed)


def digits_segmentation(image_size=64, val_fraction=0.2, seed=0):
    """The digits placed on a dark canvas; masks hold 0 for background and ``digit + 1`` on its strokes.

    Each canvas holds one scan scaled to 40-60% of the side at a random place.
    Returns ``(train, val)`` pairs ``(images (N, S, S, 3) float32, masks (N, S, S) int32)``.
    """
    scans, labels = digit_scans()
    rng = np.random.default_rng(seed)
    images = np.zeros((len(scans), image_size, image_size), "float32")
    masks = np.zeros((len(scans), image_size, image_size), "int32")
    places = []  # (side, top, left) of each scan, drawn first: no draw depends on a resized scan
    for _ in scans:
        side = int(rng.integers(int(0.4 * image_size), int(0.6 * image_size) + 1))
        places.append((side, *rng.integers(0, image_size - side + 1, size=2)))
    for indices, resized in resized_by_side(scans, [side for side, _, _ in places]):
        for i, digit in zip(indices, resized):
            side, top, left = places[i]
            images[i, top : top + side, left : left + side] = digit
            masks[i, top : top + side, left : left + side] = np.where(digit > 96, labels[i] + 1, 0)
    return split_pairs(grey_to_rgb(images), masks, val_fraction, seed)


def digit_scans():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images / 16.0 * 255.0).astype("float32"), bunch.target


def split_pairs(images, targets, val_fraction, seed):
    order = np.random.default_rng(seed).permutation(len(images))
    n_val = int(round(len(images) * val_fraction))
    val, train = order[:n_val], order[n_val:]
    return (images[train], targets[train]), (images[val], targets[val])


def require_folder(path, *children):
    """``path`` as a folder holding the sub-folders ``children``; a clear error otherwise."""
    if not os.path.isdir(path):
        checks.fail("--data", path, f"{', '.join(map(repr, EMBEDDED.values()))}, 'tfds:NAME' or an existing folder")
    for child in children:
        if not os.path.isdir(os.path.join(path, child)):
            checks.fail("--data", path, f"a folder holding {' and '.join(f'{c}/' for c in children)} "
                        f"({os.path.join(path, child)!r} is missing)")  # fmt: skip
        if not os.access(os.path.join(path, child), os.R_OK | os.X_OK):
            checks.fail("--data", path, f"a readable folder ({os.path.join(path, child)!r} cannot be read)")


def _image_files(folder):
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))


def class_folders(path, image_size):
    """``path/train`` and ``path/val``, one sub-folder of PNG/JPEG images per class (the ImageNet layout)."""
    require_folder(path, "train", "val")
    names = {}
    for split in ("train", "val"):
        root = os.path.join(path, split)
        names[split] = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        if not names[split]:
            checks.fail("--data", path, f"class sub-folders in {root!r} (found none)")
        empty = [d for d in names[split] if not _image_files(os.path.join(root, d))]
        if empty:
            checks.fail("--data", path, f"PNG or JPEG images in every class folder ({root!r}: {', '.join(empty)} empty)")
    if names["train"] != names["val"]:
        checks.fail("--data", path, f"the same class folders in train/ and val/ ({names['train']} vs {names['val']})")
    splits = [
        keras.utils.image_dataset_from_directory(
            os.path.join(path, split), labels="inferred", label_mode="int", class_names=names["train"],
            color_mode="rgb", batch_size=None, image_size=(image_size, image_size), shuffle=False,
        )  # fmt: skip
        for split in ("train", "val")
    ]
    return splits[0], splits[1], tuple(names["train"])


def segmentation_folder(path, image_size, val_every=5):
    """``path/images`` and ``path/masks`` (PNG label maps with the images' base names); every 5th pair validates."""
    require_folder(path, "images", "masks")
    images = _image_files(os.path.join(path, "images"))
    masks = {os.path.splitext(f)[0]: f for f in os.listdir(os.path.join(path, "masks")) if f.lower().endswith(".png")}
    missing = [f for f in images if os.path.splitext(f)[0] not in masks]
    if not images or missing:
        checks.fail("--data", path, "images with a PNG mask of the same name in masks/ "
                    + (f"(no mask for {', '.join(missing[:3])})" if missing else "(no images found)"))  # fmt: skip
    pairs = [(os.path.join(path, "images", f), os.path.join(path, "masks", masks[os.path.splitext(f)[0]]))
             for f in images]  # fmt: skip
    classes = 1 + max(int(tf.reduce_max(tf.io.decode_png(tf.io.read_file(m)))) for _, m in pairs)

    def read(image_path, mask_path):
        image = tf.io.decode_image(tf.io.read_file(image_path), channels=3, expand_animations=False)
        mask = tf.io.decode_png(tf.io.read_file(mask_path), channels=1)
        image = tf.image.resize(tf.cast(image, tf.float32), (image_size, image_size))
        mask = tf.image.resize(mask, (image_size, image_size), method="nearest")
        return image, tf.cast(mask[..., 0], tf.int32)

    def dataset(selected):
        columns = list(zip(*selected))
        return tf.data.Dataset.from_tensor_slices((list(columns[0]), list(columns[1]))).map(read)

    val = [p for i, p in enumerate(pairs) if i % val_every == val_every - 1]
    train = [p for i, p in enumerate(pairs) if i % val_every != val_every - 1]
    if not train or not val:
        checks.fail("--data", path, f"at least {val_every} image/mask pairs (found {len(pairs)})")
    return dataset(train), dataset(val), tuple(str(i) for i in range(classes))  # a label map names no classes


def tfds_classes(name, data_dir, image_size):
    """A TensorFlow Datasets image classification set, already in ``data_dir`` (never downloaded here)."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
        splits = builder.info.splits
        if "train" not in splits:
            raise ValueError("no train split")
    except Exception as error:  # tfds raises many kinds for a set it cannot find
        checks.fail("--data", f"tfds:{name}", f"a TensorFlow Datasets name prepared in --data-dir={data_dir!r} ({error})")
    held_out = next((s for s in ("validation", "test") if s in splits), None)
    split = ["train", held_out] if held_out else ["train[:90%]", "train[90%:]"]
    train, val = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)

    def prepare(image, label):
        image = tf.image.resize(tf.cast(image, tf.float32), (image_size, image_size))
        if image.shape[-1] == 1:
            image = tf.image.grayscale_to_rgb(image)
        return image[..., :3], label

    return train.map(prepare), val.map(prepare), tuple(builder.info.features["label"].names)
