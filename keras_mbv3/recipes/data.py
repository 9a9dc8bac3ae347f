"""Input pipelines (tf.data)."""

import numpy as np
import tensorflow as tf

DIGITS_CLASSES = 10


def digits(image_size=32, val_fraction=0.2, seed=0):
    """scikit-learn's handwritten digits (1,797 real 8x8 scans, shipped in its wheel) as RGB images.

    Returns:
        ``(train, val)`` pairs of numpy arrays ``(images, labels)``: images
        ``(N, image_size, image_size, 3)`` float32 in [0, 255], labels int.
        The split is deterministic for a given ``seed``.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0 * 255.0).astype("float32")[..., None]
    images = tf.image.resize(images, (image_size, image_size), method="bilinear").numpy()
    images = np.repeat(np.clip(images, 0, 255), 3, axis=-1)
    order = np.random.default_rng(seed).permutation(len(images))
    n_val = int(round(len(images) * val_fraction))
    val, train = order[:n_val], order[n_val:]
    return (images[train], bunch.target[train]), (images[val], bunch.target[val])


def dataset(images, labels, batch_size, num_classes, training, seed=0):
    """A batched, prefetched ``tf.data`` pipeline with one-hot labels (shuffled and flipped-free augmentation when training)."""
    data = tf.data.Dataset.from_tensor_slices((images, tf.one_hot(labels, num_classes)))
    if training:
        data = data.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        data = data.map(lambda x, y: (_augment(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _augment(image):
    """Small random translations (digits must not be flipped)."""
    size = tf.shape(image)[0]
    padded = tf.pad(image, [[2, 2], [2, 2], [0, 0]])
    return tf.image.random_crop(padded, tf.stack([size, size, 3]))
