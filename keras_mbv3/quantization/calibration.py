"""Calibration: images for it, and the float model's activation ranges that start every QAT range.

Both QAT engines (ours on Keras 3, tfmot on tf_keras) and post-training int8
export take their calibration images from ``representative_images`` and their
starting ranges from ``activation_ranges``.
"""

import numpy as np
import tensorflow as tf

from keras_mbv3.backend import keras
from keras_mbv3.graph import Graph
from keras_mbv3.layers.activations import HardGate

REPRESENTATIVE_SAMPLES = 200  # post-training int8: the converter's calibration
CALIBRATION_SAMPLES = 256  # QAT: the starting activation ranges

# A HardGate's input range holds [-3, 3], the gate's domain: the ADD's constant 3
# stays representable and its input/output scale ratio stays in what XNNPACK's
# int8 ADD accepts (a near-silent channel of an untrained model otherwise gets a
# range so narrow that XNNPACK rejects the ADD and splits the graph).
GATE_INPUT_RANGE = 3.0
GATE_OUTPUT_RANGE = HardGate.OUTPUT_RANGE  # a HardGate's output, relu6: fixed in both engines


def representative_images(dataset, limit=REPRESENTATIVE_SAMPLES):
    """Up to ``limit`` images ``(N, H, W, C)`` float32 from an array, a ``tf.data.Dataset`` or an iterable.

    A dataset may yield images or batches, alone or as ``(images, labels)``.
    """
    if isinstance(dataset, tf.data.Dataset):
        if isinstance(dataset.element_spec, tuple):
            dataset = dataset.map(lambda *element: element[0])
        if len(dataset.element_spec.shape) == 4:
            dataset = dataset.unbatch()
        dataset = dataset.take(limit).as_numpy_iterator()
    images = dataset if isinstance(dataset, np.ndarray) else np.asarray(list(dataset))
    return images[:limit].astype(np.float32)


def activation_ranges(float_model, names, images, batch_size=32):
    """``{layer name: (min, max)}`` of the outputs of ``float_model``'s layers ``names`` on ``images``.

    Each range is the mean over batches of the batch min and max (what a
    moving-average range tends to), widened to hold 0; the input of a
    ``HardGate`` holds at least [-3, 3] (``GATE_INPUT_RANGE``). Names that are
    not layers of ``float_model`` are left out.
    """
    g = Graph(float_model)
    tensors = g.layer_outputs()
    names = [name for name in names if name in tensors]
    if not names:
        return {}
    probe = keras.Model(float_model.input, [tensors[name] for name in names])
    # Eager on TensorFlow (one batch of Large at 224: 0.4 s against 1.0 s through predict's trace; 8 batches of
    # Small at 32: 1.1 s against 0.9 s). Compiled elsewhere: eager JAX compiles each op (Small at 32 px, 256 images:
    # 11.4 s eager, 1.4 s compiled once).
    if keras.backend.backend() == "tensorflow":
        run = lambda batch: probe(batch, training=False)  # noqa: E731
    else:
        run = probe.predict_on_batch
    lows, highs = [], []
    for start in range(0, len(images), batch_size):
        outputs = run(images[start : start + batch_size])
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        lows.append([float(np.min(o)) for o in outputs])
        highs.append([float(np.max(o)) for o in outputs])
    gate_inputs = {layer.name for node in g.nodes if isinstance(node.layer, HardGate) for layer in g.input_layers(node.layer)}
    ranges = {}
    for name, low, high in zip(names, np.mean(lows, axis=0), np.mean(highs, axis=0)):
        floor = GATE_INPUT_RANGE if name in gate_inputs else 0.0
        ranges[name] = (min(float(low), -floor), max(float(high), floor))
    return ranges
