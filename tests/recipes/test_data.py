"""Data sources of the recipes: embedded sets, image folders, TensorFlow Datasets (built locally), errors."""

import numpy as np
import pytest
import tensorflow as tf

from keras_mbv3.recipes import data, tasks


def write_image(path, array):
    """PNG or JPEG by extension; ``array`` HxW (grayscale), HxWx3 or HxWx4 uint8."""
    array = array if array.ndim == 3 else array[..., None]
    encoded = tf.io.encode_png(array) if str(path).endswith(".png") else tf.io.encode_jpeg(array[..., :3])
    tf.io.write_file(str(path), encoded)


def class_folder(root, rng, classes=("cat", "dog"), per_class=4):
    """An ImageNet-layout folder mixing PNG/JPEG, grayscale, RGB and RGBA images of various sizes."""
    kinds = [("png", (20, 24)), ("jpg", (30, 30, 3)), ("png", (16, 16, 4)), ("jpeg", (25, 18, 3))]
    for split in ("train", "val"):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                ext, shape = kinds[i % len(kinds)]
                write_image(folder / f"{i}.{ext}", rng.integers(label * 100, label * 100 + 50, shape).astype("uint8"))
    return root


def test_digits_and_digits_segmentation_shapes():
    digits = tasks.load("digits", image_size=32, batch_size=16)
    images, labels = next(iter(digits.val))
    assert images.shape == (16, 32, 32, 3) and labels.shape == (16, 10) and digits.classes == 10
    assert digits.train_size + digits.val_size == 1797
    seg = tasks.load("digits-seg", task="segmentation", image_size=48, batch_size=8)
    images, masks = next(iter(seg.val))
    assert images.shape == (8, 48, 48, 3) and masks.shape == (8, 48, 48) and masks.dtype == tf.int32
    assert seg.classes == 11 and 0 < int(tf.reduce_max(masks)) <= 10  # background 0, digit d as d + 1


@pytest.mark.parametrize("name, task", [("digits", "classification"), ("digits-seg", "segmentation")])
def test_training_batches_repeat_for_a_seed(name, task):
    def epochs(seed):
        train = tasks.load(name, task=task, image_size=32, batch_size=64, seed=seed).train.take(2)
        return [[b.numpy() for batch in train for b in batch] for _ in range(2)]

    first, again, other = epochs(0), epochs(0), epochs(1)
    for a, b in zip(first, again):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)  # a rerun with the same --seed trains on the same batches
    assert not np.array_equal(first[0][0], other[0][0])
    assert not np.array_equal(first[0][0], first[1][0])  # each epoch reshuffles and crops anew


def test_a_holdout_leaves_the_training_split_for_the_same_images_whatever_the_global_seed():
    full = tasks.load("digits", image_size=16, batch_size=64)
    split = tasks.load("digits", image_size=16, batch_size=64, holdout=100)

    def labels(dataset):
        return np.concatenate([np.argmax(y, -1) for _, y in dataset])

    def images(dataset):
        return np.concatenate([x for x, _ in dataset])

    assert split.train_size == full.train_size - 100 and len(labels(split.train)) == split.train_size
    held = labels(split.holdout)
    assert len(held) == 100 and len(set(held)) == 10  # drawn at random, not one class
    np.testing.assert_array_equal(np.bincount(held, minlength=10) + np.bincount(labels(split.train), minlength=10),
                                  np.bincount(labels(full.train), minlength=10))  # fmt: skip
    first = images(split.holdout)
    np.testing.assert_array_equal(first, images(split.holdout))  # unaugmented, in the same order on every pass
    tf.random.set_seed(123)
    np.testing.assert_array_equal(first, images(tasks.load("digits", image_size=16, holdout=100).holdout))
    assert not np.array_equal(first, images(tasks.load("digits", image_size=16, holdout=100, seed=1).holdout))
    assert full.holdout is None
    with pytest.raises(ValueError, match="holdout"):
        tasks.load("digits", image_size=16, holdout=full.train_size)


def test_whole_batches_keep_their_count_known_and_a_split_smaller_than_a_batch_is_refused(tmp_path, rng):
    """Several processes (and JAX's train step) take whole batches only; Keras needs their number (unknown after
    ``rebatch`` alone: "your input ran out of data")."""
    digits = tasks.load("digits", image_size=16, batch_size=64, holdout=38)  # 1,400 training images
    whole = digits.whole_batches(300)
    assert int(whole.train.cardinality()) == 4 and int(whole.val.cardinality()) == digits.val_size // 300
    assert [len(x) for x, _ in whole.train] == [300] * 4 and all(len(x) == 300 for x, _ in whole.val)
    assert int(digits.whole_batches_of(300, "train").val.cardinality()) == -(-digits.val_size // 64)  # untouched
    small = tasks.load(str(class_folder(tmp_path / "set", rng)), image_size=16, batch_size=4)  # 8 and 8 images
    with pytest.raises(ValueError, match=r"`--batch-size`.*--batch-size=12.*8 train images, 8 val images"):
        small.whole_batches(12)


def test_a_repeatable_training_split_gives_the_same_augmented_batches_on_every_pass():
    repeatable = tasks.load("digits", image_size=16, batch_size=64, holdout=100, repeatable=True).train.take(3)
    passes = [np.concatenate([x for x, _ in repeatable]) for _ in range(2)]
    np.testing.assert_array_equal(*passes)
    ordinary = tasks.load("digits", image_size=16, batch_size=64).train.take(3)
    assert not np.array_equal(*[np.concatenate([x for x, _ in ordinary]) for _ in range(2)])


def test_translation_moves_image_and_mask_together():
    image = np.zeros((8, 8, 3), "float32")
    image[2:6, 3:5] = 255.0
    mask = (image[..., 0] > 0).astype("int32") * 7
    shifts = set()
    for i in range(20):
        moved, moved_mask = tasks.get("segmentation").augment(tf.constant(image), tf.constant(mask), tf.constant([i, 0]))
        moved, moved_mask = moved.numpy(), moved_mask.numpy()
        assert moved.shape == image.shape and moved_mask.dtype == np.int32
        np.testing.assert_array_equal(moved_mask, (moved[..., 0] > 0) * 7)
        alone, _ = tasks.get("classification").augment(tf.constant(image), 0, tf.constant([i, 0]))
        np.testing.assert_array_equal(alone.numpy(), moved)  # one crop per seed for either task
        rows, columns = np.nonzero(moved[..., 0])
        shifts.add((rows.min() - 2, columns.min() - 3))
    assert len(shifts) > 5 and all(max(abs(a), abs(b)) <= 2 for a, b in shifts)


def test_class_folder_converts_every_image_to_rgb(tmp_path, rng):
    loaded = tasks.load(str(class_folder(tmp_path / "set", rng)), image_size=32, batch_size=4)
    assert (loaded.classes, loaded.train_size, loaded.val_size) == (2, 8, 8)
    images, labels = [np.concatenate(parts) for parts in zip(*loaded.val.as_numpy_iterator())]
    assert images.shape == (8, 32, 32, 3)
    # Class 1 images were drawn in [100, 150), class 0 in [0, 50): the labels follow the folders.
    assert np.all(images[labels.argmax(-1) == 1].mean(axis=(1, 2, 3)) > images[labels.argmax(-1) == 0].max() - 1)


def test_segmentation_folder(tmp_path, rng):
    root = tmp_path / "seg"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(10):
        write_image(root / "images" / f"{i}.jpg", rng.integers(0, 255, (40, 40, 3)).astype("uint8"))
        write_image(root / "masks" / f"{i}.png", rng.integers(0, 3, (40, 40)).astype("uint8"))
    loaded = tasks.load(str(root), task="segmentation", image_size=32, batch_size=2)
    assert (loaded.classes, loaded.train_size, loaded.val_size) == (3, 8, 2)
    images, masks = next(iter(loaded.val))
    assert images.shape == (2, 32, 32, 3) and masks.shape == (2, 32, 32)


def test_tfds_reads_a_locally_built_data_set(tmp_path):
    import tensorflow_datasets as tfds

    class TinyShapes(tfds.core.GeneratorBasedBuilder):
        """Two classes of 12x12 grayscale squares, built here (nothing downloaded)."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(12, 12, 1)), "label": tfds.features.ClassLabel(num_classes=2)}),
                supervised_keys=("image", "label"))  # fmt: skip

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(12), "test": self._generate_examples(4)}

        def _generate_examples(self, n):
            for i in range(n):
                yield i, {"image": np.full((12, 12, 1), 200 * (i % 2), np.uint8), "label": i % 2}

    TinyShapes(data_dir=str(tmp_path)).download_and_prepare()
    loaded = tasks.load("tfds:tiny_shapes", image_size=32, batch_size=4, data_dir=str(tmp_path))
    assert (loaded.classes, loaded.train_size, loaded.val_size) == (2, 12, 4)
    images, labels = next(iter(loaded.val))
    assert images.shape == (4, 32, 32, 3)
    np.testing.assert_allclose(images.numpy().mean(axis=(1, 2, 3)), 200 * labels.numpy().argmax(-1), atol=1e-3)


@pytest.mark.parametrize("layout, message", [
    ("missing", "existing folder"),
    ("no-val", "val/"),
    ("empty-class", "empty"),
    ("no-classes", "class sub-folders"),
    ("mismatch", "same class folders"),
])  # fmt: skip
def test_bad_folders_name_the_problem(tmp_path, rng, layout, message):
    root = tmp_path / "set"
    if layout != "missing":
        class_folder(root, rng)
    if layout == "no-val":
        import shutil

        shutil.rmtree(root / "val")
    elif layout == "empty-class":
        (root / "train" / "bird").mkdir()
        (root / "val" / "bird").mkdir()
    elif layout == "no-classes":
        import shutil

        shutil.rmtree(root / "train")
        (root / "train").mkdir()
    elif layout == "mismatch":
        (root / "val" / "dog").rename(root / "val" / "wolf")
    with pytest.raises(ValueError, match=message) as error:
        tasks.load(str(root), image_size=32)
    assert "`--data`" in str(error.value)


def test_bad_task_and_tfds_name(tmp_path):
    with pytest.raises(ValueError, match="`--task`"):
        tasks.load("digits", task="keypoints")
    with pytest.raises(ValueError, match="`--data`.*digits-seg"):
        tasks.load("digits", task="segmentation")
    with pytest.raises(ValueError, match="tfds:no_such_set"):
        tasks.load("tfds:no_such_set", data_dir=str(tmp_path))
