"""Issue 22: data-parallel training and QAT on JAX with keras.distribution, over 2 local processes on loopback.

The JAX line of ``make test``. Each process is a new Python (JAX joins processes before its first
computation); a small model of our layers keeps each compilation to seconds.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from cli_helpers import free_port
from keras_mbv3.backend import IS_KERAS_3, keras

pytestmark = pytest.mark.skipif(not IS_KERAS_3 or keras.backend.backend() != "jax",
                                reason="the JAX line of make test (KERAS_BACKEND=jax)")  # fmt: skip

PROCESS = r"""
import sys
import numpy as np
from keras_mbv3.recipes import training

process_id, num_processes, port, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
distribution = training.strategy("data-parallel", 1, (f"localhost:{port}", num_processes, process_id))
import tensorflow as tf
from keras_mbv3 import keras
from keras_mbv3.layers import HardSwish, InvertedResidual
from keras_mbv3.quantization import quantize_model

rng = np.random.default_rng(0)
images = rng.uniform(0, 255, (64, 16, 16, 3)).astype("float32")
labels = (images.mean(axis=(1, 2, 3)) > 127.5).astype("int32")
batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)  # the global batch: 16
keras.utils.set_random_seed(0)
with distribution.scope():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = HardSwish()(keras.layers.BatchNormalization()(keras.layers.Conv2D(8, 3, strides=2, use_bias=False)(x)))
    x = InvertedResidual(8, expanded_filters=16, se_ratio=0.25, activation="hard_swish")(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
    model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(batches, epochs=2, verbose=0)
with distribution.scope():
    qat = quantize_model(model, representative_dataset=images[:16])
    qat.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
qat.fit(batches, epochs=1, verbose=0)
training.check_same_weights(distribution, qat)
print("replicas", distribution.num_replicas_in_sync, "chief", distribution.is_chief, flush=True)
for name, trained in (("float", model), ("qat", qat)):
    np.save(f"{folder}/{name}-{num_processes}-{process_id}.npy",
            np.concatenate([np.ravel(np.asarray(w, "float32")) for w in trained.weights]))
"""


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """The weights after float training and QAT: of each of 2 processes, and of 1 process on the same global batch."""
    folder = tmp_path_factory.mktemp("data_parallel")
    port, env = free_port(), {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

    def start(process_id, num_processes):
        return subprocess.Popen([sys.executable, "-c", PROCESS, str(process_id), str(num_processes), str(port),
                                 str(folder)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip

    pair = [start(0, 2), start(1, 2)]
    outputs = [process.communicate(timeout=600) for process in pair]
    for process, (out, err) in zip(pair, outputs):
        assert process.returncode == 0, err[-3000:]
    alone = start(0, 1)
    out, err = alone.communicate(timeout=600)
    assert alone.returncode == 0, err[-3000:]
    printed = [out for out, _ in outputs] + [out]
    return {key: np.load(folder / f"{key}.npy") for key in
            ("float-2-0", "float-2-1", "float-1-0", "qat-2-0", "qat-2-1", "qat-1-0")}, printed  # fmt: skip


def test_two_processes_form_one_data_parallel_run_with_a_chief(weights):
    _, printed = weights
    assert "replicas 2 chief True" in printed[0] and "replicas 2 chief False" in printed[1]
    assert "replicas 1 chief True" in printed[2]


def test_both_processes_end_with_identical_weights(weights):
    found, _ = weights
    np.testing.assert_array_equal(found["float-2-0"], found["float-2-1"])
    np.testing.assert_array_equal(found["qat-2-0"], found["qat-2-1"])


def test_two_processes_train_as_one_process_on_the_same_global_batch(weights):
    found, _ = weights
    for step in ("float", "qat"):
        two, one = found[f"{step}-2-0"], found[f"{step}-1-0"]
        assert np.abs(two - one).max() <= 1e-5 * np.abs(one).max(), step
