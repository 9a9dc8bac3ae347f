"""Shared set-up of the benchmarks: one thread, results folder, Markdown tables."""

import os
import platform

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def single_thread():
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_result(name, title, body):
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, name)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, TF {tf.__version__}"
    with open(path, "w") as f:
        f.write(f"# {title}\n\n{machine}\n\n{body}\n")
    return path


def randomize_batchnorm(model, rng):
    """Give every BatchNormalization (nested ones too) random statistics and affine weights, so that float
    differences between two computations of the same model show (fresh BN is the identity)."""
    from keras_mbv3 import keras
    from keras_mbv3.layers.composite import sublayers

    for layer in sublayers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 1.5, var.shape)])  # fmt: skip
