"""Shared fixtures. The suite runs once per Keras line (see the Makefile)."""

import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_mbv3.backend import IS_KERAS_3, keras, to_numpy  # noqa: E402
from keras_mbv3.batchnorm import precise_batchnorm  # noqa: E402
from keras_mbv3.layers.composite import sublayers  # noqa: E402
from keras_mbv3.traced_gradients import release_traced_gradients  # noqa: E402


def randomize_batchnorm(model, seed=0, batchnorm_class=None):
    """Give every BatchNormalization (nested ones too) non-trivial statistics and affine weights.

    ``batchnorm_class`` defaults to the BN of the Keras line in use (pass
    ``tf_keras.layers.BatchNormalization`` for tf_keras models under Keras 3).
    """
    rng = np.random.default_rng(seed)
    for layer in [model] + sublayers(model):
        if isinstance(layer, batchnorm_class or keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                rng.normal(0, 0.1, beta.shape).astype("float32"),
                rng.normal(0, 0.1, mean.shape).astype("float32"),
                rng.uniform(0.5, 1.5, var.shape).astype("float32"),
            ])  # fmt: skip


def outputs(model, x):
    """The inference outputs of ``model`` on ``x``, called eagerly, as numpy (a list or dict of arrays for a model of
    several outputs): ``predict`` traces a function first, 0.5-0.9 s for each new 32-64 px model (measured on Small,
    Large and LR-ASPP), where the call takes 0.1-0.2 s."""
    result = model(x, training=False)
    if isinstance(result, dict):
        return {name: to_numpy(value) for name, value in result.items()}
    if isinstance(result, (list, tuple)):
        return [to_numpy(value) for value in result]
    return to_numpy(result)


def fit_batchnorm_statistics(model, images):
    """Set every BatchNormalization's moving statistics to those of ``images`` (one batch), as training would.

    An untrained model keeps mean 0 / variance 1 while its activations shrink
    layer after layer; calibrated int8 ranges of such near-silent tensors are
    unlike any trained model's.
    """
    precise_batchnorm(model, images, batch_size=len(images))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


# Keras 3's jit_compile="auto" is no XLA on a CPU-only TensorFlow (Trainer._resolve_auto_jit_compile); stated
# anyway, so that a machine with an accelerator does not spend tens of seconds of XLA on a one-step test.
NO_XLA = {"jit_compile": False} if IS_KERAS_3 else {}


def backend_gradients(function, *arrays):
    """The gradients of ``sum(function(*arrays))`` with respect to each numpy array, by the autodiff of the backend
    in use (TensorFlow's on tf_keras), as numpy arrays."""
    backend = keras.backend.backend() if IS_KERAS_3 else "tensorflow"
    if backend == "jax":
        import jax

        grad = jax.grad(lambda *a: function(*a).sum(), argnums=tuple(range(len(arrays))))
        return [np.asarray(g) for g in grad(*[jax.numpy.asarray(a) for a in arrays])]
    if backend == "torch":
        import torch

        tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
        function(*tensors).sum().backward()
        return [t.grad.numpy() for t in tensors]
    import tensorflow as tf

    tensors = [tf.constant(a) for a in arrays]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        total = tf.reduce_sum(function(*tensors))
    return [g.numpy() for g in tape.gradient(total, tensors)]


def fake_quant_edge_inputs(low, high, nan=False):
    """``(x, weights)``, float32 vectors: the nudged bounds of ``[low, high]``, ``low``, ``high`` and 0, a float step
    either side of each, the infinities (and NaN), then 200 values over twice the range; negative weights on the
    edges (a gradient beyond the range is then -0.0 on TensorFlow)."""
    from keras_mbv3.layers.fake_quant import _nudged

    with np.errstate(divide="ignore", invalid="ignore"):  # [0, 0]: no nudged bounds (NaN)
        bounds = [np.float32(v) for v in _nudged(np.float32(low), np.float32(high), 0, 255, xp=np)[:2]]
    bounds += [np.float32(v) for v in (low, high, 0.0)]
    edges = [np.nextafter(b, np.float32(sign * np.inf)) for b in bounds for sign in (-1, 1)] + bounds
    edges += [np.float32(np.inf), np.float32(-np.inf)] + ([np.float32(np.nan)] if nan else [])
    rng = np.random.default_rng(4)
    x = np.concatenate([np.asarray(edges, "float32"), rng.uniform(2 * low - 0.1, 2 * high + 0.1, 200).astype("float32")])
    weights = rng.normal(size=x.shape).astype("float32")
    weights[: len(edges)] = -np.abs(weights[: len(edges)])
    return x, weights


def assert_clear_error(call, error, argument, value):
    """``call()`` raises ``error`` whose message names ``argument``, its ``value`` (unless None) and what is allowed."""
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert f"`{argument}`" in message and "allowed" in message, message
    if value is not None:
        assert f"{argument}={value!r}" in message, message


@pytest.fixture(autouse=True, scope="module")
def _release_each_modules_graphs():
    """Each module starts with the earlier ones' garbage collected and what lives on (modules, session fixtures)
    frozen out of the cyclic collector's passes, and ends with a clear Keras session.

    With the traced graphs kept (keras_mbv3/traced_gradients.py; released after each test, below) the live
    objects grew to millions and the collector took 40% of a module's time (tests/applications/test_parity.py
    after test_qat.py: 37 s of 92 s).
    """
    gc.collect()
    gc.freeze()
    yield
    keras.backend.clear_session()


@pytest.fixture(autouse=True)
def _release_each_tests_gradients():
    """After each test, the gradient closures of its traces (cheap; the collector frees their graphs)."""
    yield
    release_traced_gradients()


@pytest.fixture(scope="session")
def ssdlite_detector():
    """``(model, qat, images)``: a 4-class SSDLiteMobileNetV3Small at 64 px (3 objects + the background) with BN
    statistics of the 8 images, and its QAT model; built once for the detection export and metadata tests."""
    from keras_mbv3.applications.ssdlite import SSDLiteMobileNetV3Small
    from keras_mbv3.quantization import quantize_model

    images = np.random.default_rng(1).integers(0, 256, (8, 64, 64, 3)).astype("float32")
    keras.utils.set_random_seed(1)  # the same random model whichever tests ran before
    model = SSDLiteMobileNetV3Small(4, input_shape=(64, 64, 3), bn_momentum=0.9)
    precise_batchnorm(model, images)
    return model, quantize_model(model, representative_dataset=images), images


def pytest_runtest_logstart(nodeid, location):
    """Write the test that starts into the file ``MBV3_LAST_TEST`` names (the Makefile's), which names it where the
    process dies in a native library (an abort prints no pytest summary, and CI keeps only the log's end)."""
    path = os.environ.get("MBV3_LAST_TEST")
    if path:
        with open(path, "w") as f:
            f.write(nodeid)
