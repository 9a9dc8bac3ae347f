"""Issue 22 (part): the layers, applications and QAT engine on the JAX and PyTorch backends of Keras 3.

Run by ``make test``'s JAX and PyTorch lines (``KERAS_BACKEND=jax`` / ``torch``); skipped on the
TensorFlow lines. A model built and trained on this backend is saved as ``.keras`` and loaded by a
TensorFlow process (a subprocess: one process has one backend), which must give the same outputs
and export it.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_mbv3.backend import IS_KERAS_3, keras, to_numpy

BACKEND = keras.backend.backend() if IS_KERAS_3 else "tensorflow"
pytestmark = pytest.mark.skipif(BACKEND not in ("jax", "torch"),
                                reason="the JAX and PyTorch lines of make test (KERAS_BACKEND=jax or torch)")  # fmt: skip

SIZE = 32
TENSORFLOW_SIDE = r"""
import json, sys
import numpy as np
import keras
from keras_mbv3.quantization import export_tflite
from keras_mbv3.quantization.litert import graph_report

folder = sys.argv[1]
found = {"backend": keras.backend.backend()}
for name in json.load(open(f"{folder}/names.json")):
    x = np.load(f"{folder}/{name}.x.npy")
    model = keras.models.load_model(f"{folder}/{name}.keras")
    outputs = model(x, training=False)
    np.savez(f"{folder}/{name}.tf.npz", *[np.asarray(o) for o in (outputs if isinstance(outputs, list) else [outputs])])
    if name.endswith("qat"):
        content = export_tflite(model, quantization="int8")
        open(f"{folder}/{name}.tflite", "wb").write(content)
        found[name] = graph_report(content)["partitions"]
json.dump(found, open(f"{folder}/found.json", "w"))
"""


def models():
    from keras_mbv3.applications import (LRASPPMobileNetV3Small, MobileNetV3Large, MobileNetV3Small,
                                         SSDLiteMobileNetV3Small)  # fmt: skip

    return {
        "small": MobileNetV3Small(input_shape=(SIZE, SIZE, 3), weights=None, classes=5, classifier_activation=None),
        "large-minimalistic-no-top": MobileNetV3Large(input_shape=(SIZE, SIZE, 3), weights=None, minimalistic=True,
                                                      include_top=False, pooling="avg", alpha=0.75),  # fmt: skip
        "lraspp-small": LRASPPMobileNetV3Small(3, input_shape=(SIZE * 2, SIZE * 2, 3)),
        # the small-objects layout (issue 24): the C3 tap and its anchors
        "ssdlite-small-stride-8": SSDLiteMobileNetV3Small(3, input_shape=(SIZE * 2, SIZE * 2, 3), min_stride=8),
    }


def tiny(size=16):
    """Our layers in a small user model: its QAT train step compiles in seconds on JAX's XLA (Small's took 84 s)."""
    from keras_mbv3.layers import HardSwish, InvertedResidual

    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(x)
    x = HardSwish()(keras.layers.BatchNormalization()(x))
    x = InvertedResidual(8, expanded_filters=16, se_ratio=0.25, activation="hard_swish")(x)
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))


@pytest.fixture(scope="module")
def on_both_backends(tmp_path_factory):
    """Models built (and QAT models made, one trained a step) on this backend, then run by TensorFlow from their
    .keras files."""
    from conftest import randomize_batchnorm

    from keras_mbv3.quantization import quantize_model

    folder = tmp_path_factory.mktemp(BACKEND)
    rng = np.random.default_rng(0)
    outputs, names, made = {}, [], {}

    def keep(key, model, images):
        made[key] = model
        model.save(folder / f"{key}.keras")
        np.save(folder / f"{key}.x.npy", images)
        output = model(images, training=False)
        output = output if isinstance(output, list) else [output]
        assert all(BACKEND in type(o).__module__ for o in output), key  # computed by this backend, not TensorFlow
        outputs[key] = [to_numpy(o) for o in output]
        names.append(key)

    for name, model in {**models(), "tiny": tiny()}.items():
        size = model.input_shape[1]
        images = rng.uniform(0, 255, (4, size, size, 3)).astype("float32")
        randomize_batchnorm(model)  # statistics fitted to 4 images amplify float rounding (1% on Large)
        keep(f"{name}-float", model, images)
        if name == "tiny":  # (Small's QAT: test_jax_cli, test_torch_cli)
            qat = quantize_model(model, representative_dataset=images)
            before = [float(w) for w in qat.non_trainable_weights if w.shape == ()]
            qat.compile(keras.optimizers.SGD(1e-3), "mse")
            qat.train_on_batch(images, to_numpy(qat(images)) * 0.9)  # QAT trains on this backend: the ranges move
            assert before != [float(w) for w in qat.non_trainable_weights if w.shape == ()]
            keep(f"{name}-qat", qat, images)
    (folder / "names.json").write_text(json.dumps(names))
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", TENSORFLOW_SIDE, str(folder)], env=env, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return folder, outputs, json.loads((folder / "found.json").read_text()), made


def test_float_models_saved_on_this_backend_give_the_same_outputs_on_tensorflow(on_both_backends):
    folder, outputs, found, _ = on_both_backends
    assert found["backend"] == "tensorflow"
    for key, our_outputs in outputs.items():
        if key.endswith("float"):
            tf_outputs = np.load(folder / f"{key}.tf.npz")
            assert len(tf_outputs.files) == len(our_outputs), key
            for k, our_output in enumerate(our_outputs):
                tf_output = tf_outputs[f"arr_{k}"]
                assert np.abs(tf_output - our_output).max() <= 1e-5 * np.abs(our_output).max(), key


def test_ssdlite_at_min_stride_8_has_its_seven_maps_anchors(on_both_backends):
    from keras_mbv3.applications import ssdlite

    model = on_both_backends[3]["ssdlite-small-stride-8-float"]
    assert ssdlite.first_stride(model) == 8
    assert model.outputs[0].shape[1] == len(ssdlite.size_anchors((SIZE * 2, SIZE * 2), 8)) == 528


def test_qat_models_made_and_trained_here_load_on_tensorflow_with_the_same_outputs_and_export_as_one_partition(
    on_both_backends,
):
    """The fake quantization is TensorFlow's op bit for bit on every backend (``layers/fake_quant.py``), so a QAT
    model gives TensorFlow's fake-quantized outputs where the float layers in between compute the same bits."""
    folder, outputs, found, _ = on_both_backends
    for key in ("tiny-qat",):
        assert found[key] == 1, key
        np.testing.assert_array_equal(np.load(folder / f"{key}.tf.npz")["arr_0"], outputs[key][0])


def test_space_to_depth_is_tensorflows_order():
    from keras_mbv3.layers import SpaceToDepth

    x = np.arange(2 * 4 * 6 * 3, dtype="float32").reshape(2, 4, 6, 3)
    y = to_numpy(SpaceToDepth(2)(x))
    # TensorFlow's order: channel (i * 2 + j) * C + c of output pixel (r, s) is input (2r + i, 2s + j, c)
    expected = x.reshape(2, 2, 2, 3, 2, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, 2, 3, 12)
    np.testing.assert_array_equal(y, expected)


def test_export_tflite_here_runs_a_tensorflow_worker_with_the_same_result(on_both_backends, tmp_path):
    """export_tflite called in this process gives the int8 file a TensorFlow process makes of the same model."""
    from keras_mbv3.quantization import export_tflite
    from keras_mbv3.quantization.litert import graph_report

    folder, _, _, made = on_both_backends
    path = tmp_path / "tiny.tflite"
    content = export_tflite(made["tiny-qat"], path, quantization="int8")
    assert path.read_bytes() == content
    assert graph_report(content) == graph_report((folder / "tiny-qat.tflite").read_bytes())
    assert content == (folder / "tiny-qat.tflite").read_bytes()


def test_netadapts_latency_table_converts_its_units_in_one_tensorflow_worker(monkeypatch):
    """``mbv3 adapt``'s table on this backend: each unit is quantized here and all are converted by one worker (one
    TensorFlow start, not one a unit), then timed in LiteRT."""
    from keras_mbv3.adapt import latency
    from keras_mbv3.quantization import export

    workers, convert = [], export.export_all_in_tensorflow
    monkeypatch.setattr(export, "export_all_in_tensorflow", lambda models, arguments: workers.append(len(models))
                        or convert(models, arguments))  # fmt: skip
    model = tiny()
    images = np.random.default_rng(0).uniform(0, 255, (8, 16, 16, 3)).astype("float32")
    unit_list = latency.units(latency.links(model))
    found = latency.measure_units(unit_list, latency.unit_inputs(model, images), rounds=3)
    assert len(unit_list) == 3 and workers == [3]
    assert set(found) == {latency.key(unit) for unit in unit_list} and all(ms > 0 for ms in found.values())


def count_workers(monkeypatch):
    """The TensorFlow workers started from now on, in a list."""
    from keras_mbv3.quantization import tensorflow_worker

    started = []

    class Counted(tensorflow_worker._Worker):
        def __init__(self):
            started.append(self)
            super().__init__()

    monkeypatch.setattr(tensorflow_worker, "_Worker", Counted)
    return started


def test_the_workers_errors_come_back_with_their_class_and_a_shared_worker_outlives_them(monkeypatch, tmp_path):
    """The worker's own checks raise here, as on TensorFlow: a float model's int8 export without calibration
    images (export_tflite refuses it before starting a worker; the worker is called directly). In a
    ``shared_worker()`` block one worker does every export, an error in its job and a nested block included; a
    worker that died in a job (a folder without one) is named with its log, and another starts at the next
    export; none outlives the block."""
    from keras_mbv3.quantization import export_tflite, tensorflow_worker

    started = count_workers(monkeypatch)
    model = tiny()
    with tensorflow_worker.shared_worker():
        first = export_tflite(model, quantization="float32")
        with pytest.raises(ValueError, match="representative_dataset"):
            tensorflow_worker.export_all_in_tensorflow([tiny()], {"quantization": "int8",
                                                                  "representative_dataset": None})  # fmt: skip
        with tensorflow_worker.shared_worker():  # nested: the outer block's worker
            assert export_tflite(model, quantization="float32") == first
        assert len(started) == 1 and started[0].process.poll() is None
        with pytest.raises(RuntimeError, match="(?s)the TensorFlow export worker failed .*it ended.*arguments.pkl"):
            tensorflow_worker._SHARED.get().run(str(tmp_path))
        assert started[0].process.poll() is not None
        assert export_tflite(model, quantization="float32") == first and len(started) == 2
    assert started[1].process.poll() is not None and started[1].log.closed


@pytest.mark.slow
def test_mbv3_adapt_cuts_an_imported_model_here_with_one_tensorflow_worker(tmp_path, capsys, monkeypatch):
    """``mbv3 import`` of a model of our layers, then ``mbv3 adapt`` in this process: the proposals fine-tuned
    (eagerly) and scored on this backend, every int8 conversion (the latency table's units, the measured models)
    done by one TensorFlow worker for the whole command: with a worker a conversion, Small's search at 32 px on
    JAX started 23 and spent 169 s of its 387 s in their starts."""
    from cli_helpers import call_cli, three_class_folder
    from keras_mbv3.layers import HardSwish, InvertedResidual
    from keras_mbv3.quantization import tensorflow_worker

    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(x)
    x = HardSwish()(keras.layers.BatchNormalization()(x))
    x = InvertedResidual(16, expanded_filters=48, se_ratio=0.25, activation="hard_swish")(x)
    x = InvertedResidual(24, strides=2, expanded_filters=64, activation="hard_swish")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x)).save(tmp_path / "mine.keras")
    out = tmp_path / "run"
    imported = call_cli(capsys, "import", tmp_path / "mine.keras", "--data", three_class_folder(tmp_path / "set"),
                        "--out", out)  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    started = count_workers(monkeypatch)
    adapted = call_cli(capsys, "adapt", "--out", out, "--target-ratio", "0.85", "--step-fraction", "0.1",
                       "--proposal-steps", "2", "--finetune-epochs", "1")  # fmt: skip
    assert adapted.returncode == 0, adapted.stderr[-3000:]
    assert len(started) == 1 and started[0].process.poll() is not None  # one worker, stopped with the command
    report = json.loads((out / "adapt.json").read_text())
    # stopped at the target: a model measured there within its interval (its table estimate, anchored on that
    # measurement, may lie above the target by up to the interval's half-width)
    assert report["stopped_by"] == "target" and report["target_ms"] < report["start"]["table_ms"]
    start, cut = report["start"]["widths"], report["adapted"]["widths"]
    assert all(cut[k] <= v for k, v in start.items()) and any(cut[k] < v for k, v in start.items())
    assert json.loads((out / "settings.json").read_text())["backend"] == BACKEND  # import's (adapt records none)
    model = keras.models.load_model(out / "adapted.keras")
    assert model.count_params() < keras.models.load_model(out / "float.keras").count_params()


@pytest.mark.parametrize("images, batch_size, steps", [(36, 8, {"jax": 4, "torch": 5}), (6, 8, {"jax": 1, "torch": 1})])
def test_the_fit_routine_takes_whole_batches_on_jax_and_every_batch_on_torch(images, batch_size, steps, tmp_path):
    """Each batch shape compiles the train step anew on XLA: on JAX the partial last batch is left out where there
    is a whole one (36 images in 8s: 4 steps, not 5), and the schedule spans the steps taken; all 6 of 6 images in
    8s remain one batch. PyTorch runs eagerly: every image, 5 steps."""
    steps = steps[BACKEND]
    from cli_helpers import three_class_folder
    from keras_mbv3.recipes import tasks, training

    per_class = images // 3
    folder = three_class_folder(tmp_path / "set", per_split=(("train", per_class), ("val", 1)), side=16)
    data = tasks.load(str(folder), "classification", image_size=32, batch_size=batch_size)
    plan = training.Fit("classification", rate=1e-2, epochs=2, batch_size=batch_size, seed=0)
    made, batches = [], []

    class Count(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            batches.append(batch)

    def make_model(planned):
        made.append(planned)
        return tiny(32)

    training.train(plan, make_model, data, str(tmp_path), "float", training.strategy("default"), callbacks=[Count()])
    assert made == [2 * steps] and len(batches) == 2 * steps


@pytest.mark.parametrize(
    "size, kernel, strides, padding", [(16, 3, 2, "valid"), (17, 3, 2, "valid"), (14, 5, 2, "same"), (15, 5, 2, "same"),
                                       (15, 3, 3, "same"), (13, 5, 2, "valid")]
)  # fmt: skip
def test_a_strided_depthwise_conv_has_keras_values_and_gradients_without_lhs_dilation(size, kernel, strides, padding):
    """On JAX's CPU the input gradient of a strided depthwise convolution is a stride-1 convolution of the
    zero-interleaved upstream gradient (XLA runs the ``lhs_dilation`` convolution of JAX's own transpose as a generic
    loop, 4x slower): Keras' values and gradients, and no ``lhs_dilate`` left in the compiled gradient."""
    from conftest import backend_gradients

    from keras_mbv3.ops import depthwise_conv

    rng = np.random.default_rng(size)
    x = rng.normal(0, 1, (2, size, size + 1, 6)).astype("float32")
    w = rng.normal(0, 1, (kernel, kernel, 6, 1)).astype("float32")

    def ours(x, w):
        return keras.ops.sin(depthwise_conv(x, w, strides=strides, padding=padding))

    def keras_op(x, w):
        return keras.ops.sin(keras.ops.depthwise_conv(x, w, strides=strides, padding=padding))

    np.testing.assert_allclose(to_numpy(ours(x, w)), to_numpy(keras_op(x, w)), rtol=1e-6, atol=1e-6)
    for a, b in zip(backend_gradients(ours, x, w), backend_gradients(keras_op, x, w)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    if BACKEND == "jax":
        import jax

        def compiled(function):
            return jax.jit(jax.grad(lambda x, w: function(x, w).sum(), (0, 1))).lower(x, w).compile().as_text()

        assert "lhs_dilate" in compiled(keras_op) and "lhs_dilate" not in compiled(ours)


@pytest.mark.parametrize("with_nan", [False, True])
def test_the_batch_range_is_the_min_and_max_in_one_pass(with_nan):
    """A moving range's batch statistics: ``min`` and ``max`` (NaN where there is one), one reduce on JAX."""
    from keras_mbv3.layers.fake_quant import batch_range

    x = np.random.default_rng(0).normal(0, 3, (4, 7, 7, 5)).astype("float32")
    if with_nan:
        x[1, 2, 3, 4] = np.nan
    low, high = (to_numpy(v) for v in batch_range(keras.ops.convert_to_tensor(x)))
    np.testing.assert_array_equal([low, high], [np.min(x), np.max(x)])
    if BACKEND == "jax":
        import jax

        text = jax.jit(batch_range).lower(x).as_text()
        assert text.count("stablehlo.reduce") == 1, text


@pytest.mark.parametrize("low, high", [(-2.5, 4.0), (-6.0, 6.0), (0.0, 6.0), (-0.37, 0.81)])
def test_fake_quant_gives_tensorflows_values_per_tensor_and_per_channel(low, high):
    """TensorFlow's op is the reference (the converter reads it): JAX and PyTorch compute it step for step."""
    import tensorflow as tf

    from keras_mbv3.layers.quantized import fake_quant

    x = np.random.default_rng(0).normal(0, 3, (4, 6, 6, 3)).astype("float32")
    lows, highs = np.array([low, -1.0, -0.5], "float32"), np.array([high, 1.0, 3.0], "float32")
    ours = [to_numpy(fake_quant(x, low, high)), to_numpy(fake_quant(x, lows, highs, axis=-1)),
            to_numpy(fake_quant(x, -highs, highs, narrow_range=True, axis=-1)),
            to_numpy(fake_quant(x, -high, high, narrow_range=True))]  # fmt: skip
    theirs = [tf.quantization.fake_quant_with_min_max_vars(x, low, high).numpy(),
              tf.quantization.fake_quant_with_min_max_vars_per_channel(x, lows, highs).numpy(),
              tf.quantization.fake_quant_with_min_max_vars_per_channel(x, -highs, highs, narrow_range=True).numpy(),
              tf.quantization.fake_quant_with_min_max_vars(x, -high, high, narrow_range=True).numpy()]
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "low, high, per_channel", [(-1.0, 1.5, False), (-0.37, 0.81, False), (0.0, 6.0, False), (None, None, True)]
)
def test_fake_quant_gradients_are_tensorflows_for_the_input_and_the_range(low, high, per_channel):
    """Inside the nudged range the input's (its bounds included: values on them, as a ReLU's zeros on a range from 0);
    beyond it, the range's (summed per channel), as TensorFlow's op gives."""
    import tensorflow as tf

    from conftest import backend_gradients

    from keras_mbv3.layers.fake_quant import fake_quant

    rng = np.random.default_rng(1)
    x = rng.normal(0, 2, (3, 5, 5, 4)).astype("float32")
    weights = rng.normal(size=x.shape).astype("float32")
    if per_channel:  # symmetric and narrow, as a kernel's range; values beyond each channel's bounds
        high = np.array([0.5, 1.0, 2.0, 3.0], "float32")
        low = -high
    low, high = np.asarray(low, "float32"), np.asarray(high, "float32")
    extremes = np.stack([np.full(x.shape[-1], -1e9, "float32"), np.full(x.shape[-1], 1e9, "float32")])
    if per_channel:
        nudged = tf.quantization.fake_quant_with_min_max_vars_per_channel(extremes, low, high, narrow_range=True)
    else:
        nudged = tf.quantization.fake_quant_with_min_max_vars(extremes, low, high)
    x[0, 0, :2] = nudged.numpy()  # values on the nudged bounds
    variables = [tf.Variable(v) for v in (x, low, high)]
    with tf.GradientTape() as tape:
        if per_channel:
            y = tf.quantization.fake_quant_with_min_max_vars_per_channel(*variables, narrow_range=True)
        else:
            y = tf.quantization.fake_quant_with_min_max_vars(*variables)
        total = tf.reduce_sum(y * weights)
    theirs = [g.numpy() for g in tape.gradient(total, variables)]
    weighted = keras.ops.convert_to_tensor(weights)
    ours = backend_gradients(lambda a, b, c: fake_quant(a, b, c, narrow_range=per_channel,
                                                     axis=-1 if per_channel else None) * weighted, x, low, high)  # fmt: skip
    np.testing.assert_array_equal(ours[0], theirs[0])
    np.testing.assert_array_equal(theirs[0][0, 0, :2], weights[0, 0, :2])  # the bounds pass the gradient
    if keras.backend.backend() == "torch" and low.ndim == 0 and low == 0:  # a bound of 0 under flush-to-zero too
        import torch

        assert torch.set_flush_denormal(True)
        try:
            flushed = backend_gradients(lambda a, b, c: fake_quant(a, b, c) * weighted, x, low, high)
        finally:
            torch.set_flush_denormal(False)
        np.testing.assert_array_equal(flushed[0], theirs[0])
    assert np.all(theirs[1] != 0) and np.all(theirs[2] != 0)  # values beyond both bounds (of each channel)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-5)  # sums: their order may differ
    np.testing.assert_allclose(ours[2], theirs[2], rtol=1e-5)


@pytest.mark.parametrize("low, high", [(-1.0, 1.5), (0.0, 6.0), (-0.123, 7.77), (-1e-3, 2e-3)])
def test_the_input_gradient_alone_is_tensorflows_on_the_bounds_and_beyond(low, high):
    """A range that is a statistic or a constant takes no gradient in training (``input_gradient_only``): the input's
    is the op's on the nudged bounds, a float step either side of them and at the infinities (on TensorFlow, bit for
    bit and in a graph too: tests/quantization/test_ranges.py)."""
    import tensorflow as tf

    from conftest import backend_gradients, fake_quant_edge_inputs

    from keras_mbv3.layers.fake_quant import fake_quant

    x, weights = fake_quant_edge_inputs(low, high)
    variable = tf.Variable(x)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(tf.quantization.fake_quant_with_min_max_vars(variable, low, high) * weights)
    theirs = tape.gradient(total, variable).numpy()
    weighted = keras.ops.convert_to_tensor(weights)
    ours = backend_gradients(lambda a: fake_quant(a, low, high, input_gradient_only=True) * weighted, x)[0]
    np.testing.assert_array_equal(ours, theirs)
    assert np.sum(theirs[:-200] == 0) >= 4  # a float step beyond each nudged bound, and the infinities


def test_a_zero_range_gives_zeros_and_passes_the_gradient_as_on_tensorflow():
    """A range of [0, 0] (a ReLU that gave only zeros in calibration): TensorFlow's kernels output 0 and pass the whole
    gradient to the input, per tensor and per channel; the nudge divides by a scale of 0 (it gave NaN here, and a QAT
    model trained to NaN then crashed the TFLite converter)."""
    import tensorflow as tf

    from conftest import backend_gradients

    from keras_mbv3.layers.fake_quant import fake_quant

    rng = np.random.default_rng(5)
    x = rng.normal(0, 2, (2, 3, 3, 3)).astype("float32")
    weights = rng.normal(size=x.shape).astype("float32")
    lows, highs = np.array([0.0, -1.0, 0.0], "float32"), np.array([0.0, 1.0, 2.0], "float32")
    cases = [(np.float32(0), np.float32(0), None), (lows, highs, -1)]
    for low, high, axis in cases:
        variables = [tf.Variable(v) for v in (x, low, high)]
        with tf.GradientTape() as tape:
            if axis is None:
                y = tf.quantization.fake_quant_with_min_max_vars(*variables)
            else:
                y = tf.quantization.fake_quant_with_min_max_vars_per_channel(*variables)
            total = tf.reduce_sum(y * weights)
        theirs = [g.numpy() for g in tape.gradient(total, variables)]
        np.testing.assert_array_equal(to_numpy(fake_quant(x, low, high, axis=axis)), y.numpy())
        weighted = keras.ops.convert_to_tensor(weights)
        ours = backend_gradients(lambda a, b, c: fake_quant(a, b, c, axis=axis) * weighted, x, low, high)
        np.testing.assert_array_equal(ours[0], theirs[0])
        for a, b in zip(ours[1:], theirs[1:]):  # the range's: sums, whose order may differ
            np.testing.assert_allclose(a, b, rtol=1e-5)
    assert np.all(theirs[0][..., 0] == weights[..., 0])  # the [0, 0] channel passes it all


def test_a_moving_range_passes_no_gradient_to_the_batch_extremes():
    """In training the range moves to the batch's extremes and quantizes the batch; the gradient of the inputs is the
    op's on that range, as on TensorFlow, whose variables cut it (on JAX the updated range passed the range's gradient
    on to the batch's extremes: 0.001 of it, the moving average's share)."""
    import tensorflow as tf

    from conftest import backend_gradients

    from keras_mbv3.layers.quantized import FakeQuant

    rng = np.random.default_rng(2)
    x = rng.normal(0, 4, (2, 6, 6, 3)).astype("float32")
    x[0, 0, 0, :2] = -30.0, 40.0  # beyond [-6, 6] and the updated range: its gradient is not 0
    weights = rng.normal(size=x.shape).astype("float32")
    layer = FakeQuant()
    layer.build(x.shape)
    state = [v.value for v in layer.non_trainable_variables]
    weighted = keras.ops.convert_to_tensor(weights)
    ours = backend_gradients(lambda a: layer.stateless_call([], state, a, training=True)[0] * weighted, x)[0]
    _, moved = layer.stateless_call([], state, x, training=True)
    low, high = (float(to_numpy(v)) for v in moved)
    assert -6.0 > low > -6.1 and 6.0 < high < 6.1
    variable = tf.Variable(x)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(tf.quantization.fake_quant_with_min_max_vars(variable, low, high) * weights)
    np.testing.assert_array_equal(ours, tape.gradient(total, variable).numpy())


@pytest.mark.parametrize("training", [False, True])
def test_a_quantized_gate_gives_tensorflows_values_and_gradients(training):
    """``QuantHardGate`` is a ``HardGate`` and a ``FakeQuant`` of range [0, 6] in one layer: TensorFlow's relu6 and
    fake-quantization ops give its values and gradients, also for the inputs on either side of relu6's bounds (the
    gradient passes strictly inside them; near 3, x + 3 rounds)."""
    import tensorflow as tf

    from conftest import backend_gradients

    from keras_mbv3.layers.quantized import QuantHardGate

    rng = np.random.default_rng(3)
    x = rng.normal(0, 3, (2, 5, 5, 8)).astype("float32")
    edges = [-3.0, 3.0, -30.0, 30.0, 0.0, 1.5]
    for bound in (-3.0, 3.0):
        edges += [np.nextafter(np.float32(bound), np.float32(sign * np.inf), dtype=np.float32) for sign in (-1, 1)]
    edges += [np.float32(3.0) - np.float32(2**-22), np.float32(3.0) - np.float32(2**-21)]  # fl(x + 3) rounds
    x.reshape(-1)[: len(edges)] = edges
    weights = rng.normal(size=x.shape).astype("float32")
    layer = QuantHardGate()
    ours = to_numpy(layer(x, training=training))
    gradient = backend_gradients(lambda a: layer(a, training=training) * keras.ops.convert_to_tensor(weights), x)[0]
    variable = tf.Variable(x)
    with tf.GradientTape() as tape:
        theirs = tf.quantization.fake_quant_with_min_max_vars(tf.nn.relu6(variable + 3.0), 0.0, 6.0)
        total = tf.reduce_sum(theirs * weights)
    expected = tape.gradient(total, variable).numpy()
    np.testing.assert_array_equal(ours, theirs.numpy())
    np.testing.assert_array_equal(gradient, expected)
    assert np.sum(expected.reshape(-1)[: len(edges)] == 0) >= 6  # the bounds and beyond pass nothing
