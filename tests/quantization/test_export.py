"""export_tflite: modes, I/O types, atomic writes; the LiteRT graph report."""

import os

import numpy as np
import pytest

from keras_mbv3.backend import IS_KERAS_3, keras
from keras_mbv3.layers import HardSwish, InvertedResidual
from keras_mbv3.quantization import export_tflite, quantize_model
from keras_mbv3.quantization.export import Int8GraphError
from keras_mbv3.files import write_atomically
from keras_mbv3.graph import input_name
from keras_mbv3.quantization.litert import _dequantize, _quantize, graph_report, interpreter, predict


@pytest.fixture(scope="module")
def model():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same")(inputs)
    x = HardSwish()(x)
    x = InvertedResidual(16, expanded_filters=96, se_ratio=0.25, activation="hard_swish", name="b")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4)(x))


@pytest.fixture
def images(rng):
    return rng.uniform(-1, 1, (16, 32, 32, 3)).astype("float32")


def test_float32_export_matches_keras_and_keeps_fused_hard_swish(model, images):
    content = export_tflite(model, quantization="float32")
    np.testing.assert_allclose(predict(interpreter(content), images), model.predict(images, verbose=0), atol=1e-4)
    report = graph_report(content)
    assert report["ops"].get("HARD_SWISH", 0) >= 1  # the fastest float form


@pytest.mark.parametrize("quantization", ["float16", "dynamic"])
def test_reduced_float_exports_run(model, images, quantization):
    content = export_tflite(model, quantization=quantization)
    out = predict(interpreter(content), images)
    np.testing.assert_allclose(out, model.predict(images, verbose=0), atol=0.05)
    assert len(content) < len(export_tflite(model, quantization="float32"))


@pytest.mark.parametrize("io_type, dtype", [("int8", np.int8), ("uint8", np.uint8), ("float32", np.float32)])
def test_post_training_int8_io_types(model, images, io_type, dtype):
    content = export_tflite(model, quantization="int8", representative_dataset=images, input_type=io_type,
                            output_type=io_type)  # fmt: skip
    runner = interpreter(content)
    assert runner.get_input_details()[0]["dtype"] == dtype
    assert runner.get_output_details()[0]["dtype"] == dtype
    expected = model.predict(images, verbose=0)
    assert np.abs(predict(runner, images) - expected).mean() < 0.1 * np.abs(expected).max()


@pytest.mark.slow
@pytest.mark.parametrize("quantization", ["float32", "int8"])
def test_strip_names_keeps_graph_outputs_and_io_names(model, images, quantization):
    calibration = images if quantization == "int8" else None
    named = export_tflite(model, quantization=quantization, representative_dataset=calibration)
    stripped = export_tflite(model, quantization=quantization, representative_dataset=calibration, strip_names=True)
    assert len(stripped) < len(named)
    assert graph_report(stripped) == graph_report(named)
    np.testing.assert_array_equal(predict(interpreter(stripped), images), predict(interpreter(named), images))
    runners = interpreter(named), interpreter(stripped)
    for details in ("get_input_details", "get_output_details"):
        assert [d["name"] for d in getattr(runners[1], details)()] == [d["name"] for d in getattr(runners[0], details)()]
    io = {d["index"] for d in runners[1].get_input_details() + runners[1].get_output_details()}
    inner = [d["name"] for d in runners[1].get_tensor_details() if d["index"] not in io]
    assert inner and not any(inner)


@pytest.mark.parametrize("quantization", ["float32", "int8"])
def test_signature_runner_gives_the_same_outputs(model, images, quantization):
    content = export_tflite(model, quantization=quantization, representative_dataset=images, strip_names=True)
    runner = interpreter(content)
    name = input_name(model.inputs[0])
    assert runner.get_signature_list() == {"serving_default": {"inputs": [name], "outputs": ["output_0"]}}
    (detail,), (out_detail,) = runner.get_input_details(), runner.get_output_details()
    signature = runner.get_signature_runner()
    outputs = [_dequantize(signature(**{name: _quantize(x[None], detail)})["output_0"], out_detail)[0] for x in images[:4]]
    np.testing.assert_array_equal(np.stack(outputs), predict(interpreter(content), images[:4]))


def test_int8_of_float_model_needs_representative_dataset(model):
    with pytest.raises(ValueError, match="representative_dataset"):
        export_tflite(model, quantization="int8")


@pytest.mark.parametrize("kwargs, argument", [
    (dict(quantization="int4"), "quantization"),
    (dict(quantization="float32", input_type="int16"), "input_type"),
    (dict(quantization="float32", output_type="bf16"), "output_type"),
    (dict(quantization="float32", strip_names="yes"), "strip_names"),
])  # fmt: skip
def test_bad_export_arguments(model, kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        export_tflite(model, **kwargs)


def test_no_overwrite_and_atomic_write(model, tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"user data")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_tflite(model, str(path), quantization="float32")
    assert path.read_bytes() == b"user data"
    content = export_tflite(model, str(path), quantization="float32", overwrite=True)
    assert path.read_bytes() == content
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"]  # no temporary left behind
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # like any file the user writes, not mkstemp's 0600


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.tflite"
    with pytest.raises(TypeError):
        write_atomically(object(), str(target))
    assert not target.exists() and not os.listdir(tmp_path)


EXPORT_SCRIPT = """
import sys
from keras_mbv3 import keras
from keras_mbv3.layers import HardSwish
from keras_mbv3.quantization import export, export_tflite
write = export.write_atomically
def announced_write(*args, **kwargs):  # the test kills the process the moment the write starts
    print("writing", flush=True)
    return write(*args, **kwargs)
export.write_atomically = announced_write
inputs = keras.Input((32, 32, 3))
x = HardSwish()(keras.layers.Conv2D(8, 3)(inputs))
model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
print("converting", flush=True)
export_tflite(model, sys.argv[1], quantization="float32")
print("done", flush=True)
"""


@pytest.mark.slow
@pytest.mark.skipif(not IS_KERAS_3, reason="a subprocess test; once is enough (the Keras 3 line)")
@pytest.mark.parametrize("kill_at", ["converting", "writing", None])  # None: let it finish
def test_export_killed_at_any_moment_leaves_the_whole_file_or_none(tmp_path, kill_at):
    import subprocess
    import sys

    path = tmp_path / "model.tflite"
    process = subprocess.Popen([sys.executable, "-c", EXPORT_SCRIPT, str(path)], stdout=subprocess.PIPE, text=True)
    lines = []
    while kill_at is not None and kill_at not in lines and process.poll() is None:
        lines.append(process.stdout.readline().strip())  # blocks until the script prints its next line
    if kill_at is not None:
        process.kill()
    process.wait(timeout=300)
    lines += process.stdout.read().split()
    assert kill_at is None or kill_at in lines
    if "done" in lines:
        assert path.exists()
    if path.exists():  # whole, never a prefix of the model
        runner = interpreter(path.read_bytes())
        assert runner.get_output_details()[0]["shape"].tolist() == [1, 8]
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "model.tflite"]
    assert all(name.startswith(".partial-") for name in leftovers)  # never at the destination's name
    write_atomically(b"again", str(path), overwrite=True)  # the next write clears what the killed one left
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"]


def test_a_write_removes_only_temporaries_of_killed_writers_on_this_host(tmp_path):
    import socket
    import subprocess
    import sys

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)  # fmt: skip
    host = socket.gethostname()
    kept = [f".partial-{host}-{os.getpid()}-abc_12-model.tflite",  # a writer still running
            f".partial-elsewhere.example-{dead}-abc_12-model.tflite",  # another host's writer
            f".partial-{host}-{dead}-abc_12-other.tflite"]  # another file's  # fmt: skip
    stale = f".partial-{host}-{dead}-abc_12-model.tflite"
    for name in kept + [stale]:
        (tmp_path / name).write_bytes(b"partial")
    write_atomically(b"data", str(tmp_path / "model.tflite"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["model.tflite"])


def test_post_training_int8_exports_the_int8_form_in_one_partition(model, images):
    """The fixture has three HardSwish: as HARD_SWISH ops XNNPACK would leave them out (4 partitions)."""
    content = export_tflite(model, quantization="int8", representative_dataset=images)
    report = graph_report(content)
    assert report["partitions"] == 1 and "HARD_SWISH" not in report["ops"] and not report["float_ops"]


def split_model():
    """int8 MAXIMUM is not an XNNPACK op: it splits the graph between the convs."""
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    b = keras.layers.Conv2D(4, 1)(inputs)
    x = keras.layers.Maximum()([a, b])
    return keras.Model(inputs, keras.layers.Conv2D(2, 1)(x))


def test_int8_export_that_splits_raises_or_warns_naming_the_ops(rng, tmp_path):
    model, images = split_model(), rng.uniform(-1, 1, (8, 8, 8, 3)).astype("float32")
    path = tmp_path / "split.tflite"
    with pytest.raises(Int8GraphError, match="MAXIMUM"):
        export_tflite(model, str(path), quantization="int8", representative_dataset=images)
    assert not path.exists()
    with pytest.warns(UserWarning, match="XNNPACK partitions, not 1.*MAXIMUM") as caught:
        content = export_tflite(model, str(path), quantization="int8", representative_dataset=images, check_graph="warn")
    assert path.read_bytes() == content and graph_report(content)["partitions"] > 1
    assert {record.filename for record in caught if "MAXIMUM" in str(record.message)} == {__file__}  # the caller's line


@pytest.mark.skipif(not IS_KERAS_3, reason="built from the Keras 3 engine's layers")
def test_a_tensor_without_range_is_a_float_island_and_raises(rng):
    from keras_mbv3.layers.quantized import FakeQuant, QuantConv2D

    inputs = keras.Input((8, 8, 3))
    x = FakeQuant()(inputs)
    x = QuantConv2D(4, 3, padding="same")(x)  # no FakeQuant after: the converter keeps it float
    x = keras.layers.Rescaling(2.0)(x)
    model = keras.Model(inputs, FakeQuant()(x))
    with pytest.raises(Int8GraphError, match="not fully int8"):
        export_tflite(model, quantization="int8")


def test_models_with_several_inputs_and_outputs_export(rng):
    image, extra = keras.Input((16, 16, 3), name="image"), keras.Input((16, 16, 1), name="mask")
    x = keras.layers.Concatenate()([image, extra])
    x = keras.layers.Conv2D(4, 3, padding="same")(x)
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model([image, extra], [keras.layers.Dense(2)(pooled), x])
    runner = interpreter(export_tflite(model, quantization="float32"))
    signature = runner.get_signature_runner()
    assert runner.get_signature_list()["serving_default"] == {"inputs": ["image", "mask"],
                                                              "outputs": ["output_0", "output_1"]}  # fmt: skip
    a, b = rng.normal(size=(1, 16, 16, 3)).astype("float32"), rng.normal(size=(1, 16, 16, 1)).astype("float32")
    outputs = signature(image=a, mask=b)
    expected = model.predict([a, b], verbose=0)
    found = sorted((v for v in outputs.values()), key=lambda v: v.ndim)
    for got, want in zip(found, sorted(expected, key=lambda v: v.ndim)):
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_converter_notices_that_do_not_apply_are_silenced(model, images, caplog, recwarn):
    """Issue 15: "Please consider providing the trackable_obj argument" (twice per export) and "Statistics for
    quantized inputs were expected" were printed on every export; neither is something a user can act on."""
    from keras_mbv3.quantization.export import NOTICES

    caplog.set_level("WARNING")
    export_tflite(model, quantization="int8", representative_dataset=images)
    export_tflite(quantize_model(model, representative_dataset=images), quantization="int8")
    messages = [str(w.message) for w in recwarn] + [record.getMessage() for record in caplog.records]
    assert not [m for m in messages if m.startswith(NOTICES)]


def test_uint8_io_adds_only_the_boundary_quantize_ops_and_gives_the_int8_io_scores(model, images):
    """Issue 12: raw pixels in (MediaPipe refuses int8 input): a QUANTIZE at each end, outside the one partition."""
    qat = quantize_model(model, representative_dataset=images)
    int8_io = export_tflite(qat, quantization="int8")
    uint8_io = export_tflite(qat, quantization="int8", input_type="uint8", output_type="uint8")
    report = graph_report(uint8_io)
    assert report["ops"]["QUANTIZE"] == 2 and "QUANTIZE" not in graph_report(int8_io)["ops"]
    assert report["partitions"] == 1 and report["undelegated"].get("QUANTIZE") == 2
    detail = interpreter(uint8_io).get_input_details()[0]
    assert detail["dtype"] == np.uint8
    np.testing.assert_allclose(predict(interpreter(uint8_io), images), predict(interpreter(int8_io), images), atol=0.02)


def test_the_export_workers_errors_that_do_not_unpickle_come_back_as_runtime_errors_naming_their_class():
    """(The worker exports for JAX and PyTorch processes; an error class whose constructor needs more than its
    message would otherwise fail in the caller's unpickling instead of saying what happened.)"""
    from keras_mbv3.quantization.tensorflow_worker_main import _portable_error

    class NeedsTwo(Exception):
        def __init__(self, what, where):
            super().__init__(f"{what} at {where}")

    assert isinstance(_portable_error(ValueError("plain")), ValueError)
    try:
        raise NeedsTwo("overflow", "layer 3")
    except NeedsTwo as error:
        portable = _portable_error(error)
    assert isinstance(portable, RuntimeError) and "NeedsTwo: overflow at layer 3" in str(portable)
