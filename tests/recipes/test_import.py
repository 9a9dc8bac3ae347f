"""Issue 21: `mbv3 import` (your model file in, a run folder out) and `mbv3 export --ptq`, in-process."""

import json
import os

import numpy as np
import pytest

from keras_mbv3.backend import IS_KERAS_3, keras
from keras_mbv3.files import sha256
from keras_mbv3.quantization import read_metadata
from keras_mbv3.quantization.litert import graph_report
from cli_helpers import assert_one_line_error, call_cli, call_cli_captured, keras_3_only

from conftest import outputs, randomize_batchnorm


pytestmark = pytest.mark.slow  # trains, converts or starts processes: `make test`, not `make check`


def user_model(classes=10, size=32):
    """What a user brings: keras.applications' MobileNetV3Small with a head of their own (digits: 10 classes)."""
    base = keras.applications.MobileNetV3Small(input_shape=(size, size, 3), weights=None, include_top=False,
                                               minimalistic=True)  # fmt: skip
    randomize_batchnorm(base)
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    x = keras.layers.Dropout(0.1)(x)
    return keras.Model(base.input, keras.layers.Dense(classes, activation="softmax")(x), name="my_classifier")


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """`mbv3 import my_classifier.keras --data digits --out run`, then `mbv3 export --out run --ptq`."""
    root = tmp_path_factory.mktemp("import")
    path = root / ("my_classifier.keras" if IS_KERAS_3 else "my_classifier.h5")
    model = user_model()
    model.save(path)
    out = root / "run"
    results = [call_cli_captured("import", path, "--data", "digits", "--out", out),
               call_cli_captured("export", "--out", out, "--ptq")]  # fmt: skip
    return model, path, out, results


def test_import_writes_float_keras_with_its_sha256_and_the_models_settings(imported, rng):
    model, path, out, (result, _) = imported
    assert result.returncode == 0
    settings = json.loads((out / "settings.json").read_text())
    assert settings["float_sha256"] == sha256(out / "float.keras")
    assert settings["imported"] == os.path.abspath(path)
    assert settings["task"] == "classification" and settings["image_size"] == 32
    loaded = keras.models.load_model(out / "float.keras")
    assert "InvertedResidual" in {type(layer).__name__ for layer in loaded.layers}  # from_keras: ours, one flat model
    x = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(outputs(loaded, x), outputs(model, x), atol=1e-5)


def test_export_ptq_ships_one_partition_int8_with_metadata_then_eval_reads_it(imported, capsys):
    _, _, out, (_, result) = imported
    assert result.returncode == 0
    content = (out / "int8_ptq.tflite").read_bytes()
    report = graph_report(content)
    assert report["partitions"] == 1 and not report["float_ops"]
    assert report["io_types"] == {"inputs": ["float32"], "outputs": ["uint8"]}
    metadata = read_metadata(content)
    assert metadata.labels[:3] == ("0", "1", "2") and metadata.name == "my_classifier"
    assert not (out / "int8.tflite").exists()  # no QAT: nothing claims to be QAT
    evaluation = call_cli(capsys, "eval", "--out", out)
    assert evaluation.returncode == 0
    found = json.loads(evaluation.stdout[evaluation.stdout.index("{"):])
    assert set(found) == {"float", "int8_ptq"}
    assert abs(found["float"]["accuracy"] - found["int8_ptq"]["accuracy"]) < 0.2


def test_import_never_overwrites_float_keras_without_overwrite(imported, capsys):
    _, path, out, _ = imported
    before = (out / "float.keras").read_bytes()
    result = call_cli(capsys, "import", path, "--data", "digits", "--out", out)
    assert_one_line_error(result, "`--out`", "float.keras", "--overwrite")
    assert (out / "float.keras").read_bytes() == before


def test_a_model_that_does_not_fit_the_data_is_refused_before_anything_is_written(capsys, tmp_path):
    path = tmp_path / ("five.keras" if IS_KERAS_3 else "five.h5")
    user_model(classes=5).save(path)
    result = call_cli(capsys, "import", path, "--data", "digits", "--out", tmp_path / "run")
    assert_one_line_error(result, "`MODEL`", "10 classes", "5 classes")
    assert not (tmp_path / "run").exists()
    (tmp_path / "weights.txt").write_text("no model")
    assert_one_line_error(call_cli(capsys, "import", tmp_path / "weights.txt", "--data", "digits", "--out",
                                   tmp_path / "run"), "`MODEL`", ".keras")  # fmt: skip


@keras_3_only
def test_qat_of_an_imported_model_and_the_report_compares_ptq_and_qat(imported, capsys):
    _, _, out, _ = imported
    assert call_cli(capsys, "recipe", "--out", out, "--qat-epochs", "1").returncode == 0
    report = json.loads((out / "report.json").read_text())
    assert {"float", "int8", "int8_ptq"} <= set(report)
    markdown = (out / "report.md").read_text()
    assert "int8 (QAT)" in markdown and "int8 (post-training)" in markdown and "my_classifier" in markdown


@pytest.mark.skipif(not IS_KERAS_3, reason="Keras 3 cannot read a tf.keras 2 .h5; tf_keras imports it (above)")
def test_a_tf_keras_2_h5_on_keras_3_is_refused_with_the_way_that_works(capsys, tmp_path):
    """keras.applications' MobileNetV3 saved by tf.keras 2 holds TFOpLambda layers (its ``x + 3``)."""
    import h5py

    layers = [
        {"class_name": "InputLayer", "name": "input_1", "inbound_nodes": [],
         "config": {"batch_input_shape": [None, 32, 32, 3], "dtype": "float32", "name": "input_1"}},
        {"class_name": "TFOpLambda", "name": "tf.__operators__.add", "inbound_nodes": [["input_1", 0, 0, {"y": 3.0}]],
         "config": {"name": "tf.__operators__.add", "dtype": "float32", "function": "__operators__.add"}},
    ]  # fmt: skip
    config = {"class_name": "Functional", "config": {"name": "old", "layers": layers, "input_layers": [["input_1", 0, 0]],
                                                     "output_layers": [["tf.__operators__.add", 0, 0]]}}  # fmt: skip
    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as f:
        f.attrs.update(keras_version="2.21.0", backend="tensorflow", model_config=json.dumps(config))
        f.create_group("model_weights")
    result = call_cli(capsys, "import", path, "--data", "digits", "--out", tmp_path / "run")
    assert_one_line_error(result, "`MODEL`", "tf.keras 2", "TF_USE_LEGACY_KERAS=1")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_an_imported_runs_float_keras_is_the_weights_of_a_detection_or_segmentation_backbone(imported, task):
    """`mbv3 recipe --task detection --weights RUN/float.keras`: the backbone's layers by name (full tail)."""
    from keras_mbv3.layers.composite import weighted_leaf_layers
    from keras_mbv3.recipes import tasks

    _, _, out, _ = imported
    source = weighted_leaf_layers(keras.saving.load_model(out / "float.keras", compile=False))
    kind = tasks.get(task, **tasks.get(task).OPTIONS)  # detection's min_stride given (16), not left to the data
    model = kind.build_model("small", True, 3, (64, 64, 3), 1.0, 0.99, str(out / "float.keras"))
    shared = {name: layer for name, layer in weighted_leaf_layers(model).items() if name in source}
    assert "expanded_conv_10_project" in shared and "conv_1" in shared
    for name, layer in shared.items():
        for mine, loaded in zip(layer.get_weights(), source[name].get_weights()):
            np.testing.assert_array_equal(mine, loaded)


def test_a_stride_8_detection_file_tells_import_and_eval_its_min_stride(capsys, tmp_path):
    """``--min-stride`` need not be repeated for a file that tells it (its anchor rows); a run of the other stride
    refuses it, naming the flag's value."""
    from keras_mbv3.applications.ssdlite import SSDLiteMobileNetV3Small
    from keras_mbv3.recipes import data, detection_data, evaluation

    folder = detection_data.write_coco_folder(tmp_path / "coco", *detection_data.digits_detection(64, 8, 4),
                                              data.DIGIT_NAMES)  # fmt: skip
    path = str(tmp_path / ("det8.keras" if IS_KERAS_3 else "det8.h5"))
    SSDLiteMobileNetV3Small(11, input_shape=(64, 64, 3), bn_momentum=0.9, min_stride=8).save(path)
    assert evaluation.settings_of_files([path]) == {"task": "detection", "image_size": 64, "min_stride": 8}
    refused = call_cli(capsys, "import", path, "--data", folder, "--out", tmp_path / "plain", "--min-stride", "16")
    assert_one_line_error(refused, "--task detection --min-stride 16 on", "11 classes and 144 anchors",
                          "11 classes and 528 anchors")  # fmt: skip
    assert not (tmp_path / "plain").exists()
    assert call_cli(capsys, "import", path, "--data", folder, "--out", tmp_path / "run").returncode == 0
    assert json.loads((tmp_path / "run" / "settings.json").read_text())["min_stride"] == 8
