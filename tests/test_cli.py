"""The mbv3 command line: examples in --help, one-line errors, runs that resume, strategies (real subprocesses)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_mbv3.backend import FLAVOUR, IS_KERAS_3
from keras_mbv3.recipes import training
from keras_mbv3.recipes.cli import COMMANDS
from cli_helpers import (USER_ENV, assert_one_line_error, call_cli, call_cli_captured, epochs_logged, keras_3_only,
                         kill_when_logged, legacy_only, run_cli, three_class_folder)
from mediapipe_client import classify, needs_mediapipe, segment


# The runs that train, convert whole models or start processes are marked slow (`make test`, not `make check`);
# the argument, help, refusal, predict, eval and bench tests run in this process in about a second each.


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_help_shows_an_example(capsys, command):
    result = call_cli(capsys, command, "--help")
    assert result.returncode == 0 and f"example: mbv3 {command}" in result.stdout


@pytest.mark.slow
def test_error_in_a_new_process_has_no_traceback(tmp_path):
    result = run_cli("recipe", "--model", "medium", "--out", tmp_path / "run")
    assert_one_line_error(result, "`--model`", "'medium'", "small")


@pytest.mark.parametrize("args, fragments", [
    (["recipe", "--model", "medium"], ["`--model`", "'medium'", "small"]),
    (["train", "--epochs", "0"], ["`--epochs`", "0", "positive integer"]),
    (["train", "--image-size", "16"], ["`--image-size`", "16", "at least 32"]),
    (["train", "--alpha", "-1"], ["`--alpha`", "-1"]),
    (["train", "--task", "keypoints"], ["`--task`", "'keypoints'", "detection"]),
    (["train", "--strategy", "tpu"], ["`--strategy`", "'tpu'", "mirrored"]),
    (["train", "--strategy", "multi-worker"], ["`--strategy`", "TF_USE_LEGACY_KERAS=1" if IS_KERAS_3 else "TF_CONFIG"]),
    (["train", "--strategy", "data-parallel"], ["`--strategy`", "KERAS_BACKEND=jax"]),
    (["train", "--num-processes", "2"], ["`--coordinator`", "None"]),
    (["train", "--num-processes", "2", "--coordinator", "localhost:1"], ["`--num-processes`", "data-parallel"]),
    (["train", "--process-id", "1"], ["`--process-id`", "0 to --num-processes - 1"]),
    (["recipe", "--num-processes", "2", "--coordinator", "localhost:1"], ["`--num-processes`", "mbv3 qat"]),
    (["train", "--weights", "/no/such/weights.h5"], ["`--weights`", "/no/such/weights.h5", "imagenet"]),
    (["train", "--data", "/no/such/folder"], ["`--data`", "/no/such/folder", "folder"]),
    (["train", "--data", "tfds:no_such_set_here"], ["`--data`", "tfds:no_such_set_here"]),
    (["bench", "--threads", "0"], ["`--threads`", "0"]),
    (["train", "--epochs", "two"], ["--epochs", "'two'"]),
])  # fmt: skip
def test_bad_flags_are_one_clear_line(capsys, tmp_path, args, fragments):
    assert_one_line_error(call_cli(capsys, *args, "--out", tmp_path / "run"), *fragments)


def test_missing_or_wrong_model_files(capsys, tmp_path):
    out = tmp_path / "run"
    assert_one_line_error(call_cli(capsys, "export", "--out", out), "float.keras", "mbv3 train")
    assert_one_line_error(call_cli(capsys, "qat", "--out", out), "float.keras", "mbv3 train")
    assert_one_line_error(call_cli(capsys, "eval", "--out", out), "float.tflite", "mbv3 export")
    assert_one_line_error(call_cli(capsys, "bench", "--out", out), "float.tflite", "mbv3 export")
    (tmp_path / "notes.txt").write_text("not a model")
    assert_one_line_error(call_cli(capsys, "eval", "--out", out, "--file", tmp_path / "notes.txt"), "`--file`", ".tflite")
    (tmp_path / "fake.tflite").write_bytes(b"not a flatbuffer at all")
    assert_one_line_error(call_cli(capsys, "eval", "--out", out, "--file", tmp_path / "fake.tflite"), "`--file`",
                          "fake.tflite")  # fmt: skip
    (tmp_path / "fake.keras").write_bytes(b"not a zip")
    assert_one_line_error(call_cli(capsys, "eval", "--out", out, "--file", tmp_path / "fake.keras"), "`--file`",
                          "fake.keras")  # fmt: skip
    assert_one_line_error(call_cli(capsys, "bench", "--out", out, "--file", tmp_path / "none.tflite"), "`--file`",
                          "not found")  # fmt: skip
    assert sorted(os.listdir(tmp_path)) == ["fake.keras", "fake.tflite", "notes.txt"]  # nothing written


def test_other_settings_in_existing_run_are_refused(capsys, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "settings.json").write_text('{"data": "digits", "model": "large"}')
    result = call_cli(capsys, "train", "--out", out, "--model", "small")
    assert_one_line_error(result, "another --out", "--model: 'large' there", "leave the flag out")
    assert (out / "settings.json").read_text() == '{"data": "digits", "model": "large"}'


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """`train --epochs 2` on digits, SIGKILLed at the start of epoch 2 and rerun; then `recipe --out` (the folder
    remembers its settings), killed during QAT's epoch 2 and rerun. Returns the folder and the reruns' outputs."""
    work = tmp_path_factory.mktemp("digits_run")
    out = work / "run"
    args = [sys.executable, "-m", "keras_mbv3", "train", "--out", str(out), "--epochs", "2"]
    kill_when_logged(args, work / "train.log", "Epoch 2/2")
    killed = {"float": epochs_logged(out / "float_history.csv"), "float.keras": (out / "float.keras").exists()}
    train = call_cli_captured(*args[3:])  # the kills need processes of their own; the resumes do not
    recipe_args = [sys.executable, "-m", "keras_mbv3", "recipe", "--out", str(out), "--qat-epochs", "2"]
    kill_when_logged(recipe_args, work / "recipe.log", "Epoch 2/2")
    killed.update(qat=epochs_logged(out / "qat_history.csv"), **{"qat.keras": (out / "qat.keras").exists()})
    recipe = call_cli_captured(*recipe_args[3:])
    return out, killed, train, recipe


@pytest.mark.slow
@keras_3_only
def test_killed_training_resumes_and_the_recipe_keeps_int8_within_a_point_of_float(digits_run, capsys):
    """Each killed step resumes at its epoch 2; a finished recipe is reused, not recomputed.

    Issue 15: after `digits --epochs 2` float and int8 were both at 10.86% (BN statistics that never caught up);
    now float evaluates at least at its last training-mode accuracy less 3 points, int8 at most 1 point below float.
    """
    out, killed, result, recipe = digits_run
    assert killed == {"float": [0], "float.keras": False, "qat": [0], "qat.keras": False}
    assert result.returncode == 0, result.stderr
    assert "Epoch 2/2" in result.stdout and "Epoch 1/2" not in result.stdout
    assert f"[train] wrote {out / 'float.keras'}" in result.stdout
    assert epochs_logged(out / "float_history.csv") == [0, 1]
    assert (out / "float.keras").exists() and not (out / "float_backup").exists()

    result = recipe  # reuses the float model; QAT resumes at its epoch 2
    assert result.returncode == 0, result.stderr
    assert "[train] done before, reusing float.keras" in result.stdout
    assert "Epoch 2/2" in result.stdout and "Epoch 1/2" not in result.stdout
    for written in ("[qat] wrote " + str(out / "qat.keras"), "[export] wrote " + str(out / "float.tflite"),
                    "[bench] wrote " + str(out / "bench.json")):  # fmt: skip
        assert written in result.stdout
    assert epochs_logged(out / "qat_history.csv") == [0, 1]
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["epochs"] == 2 and report["settings"]["qat_epochs"] == 2
    float_accuracy, int8_accuracy = report["float"]["accuracy"], report["int8"]["accuracy"]
    training_mode = training.read_history(str(out / "float_history.csv"))["accuracy"][-1]
    assert float_accuracy >= training_mode - 0.03 and float_accuracy >= 0.5  # not at chance (0.1)
    # QAT's 2 epochs go on training a float model of 2 epochs: int8 may end higher (measured 93.9% vs 91.1%).
    assert int8_accuracy >= float_accuracy - 0.01
    assert report["int8"]["size_bytes"] < 0.3 * report["float"]["size_bytes"]  # issue 5's size target
    bench = json.loads((out / "bench.json").read_text())
    assert set(bench["models"]) == {"float", "int8"} and bench["threads"] == 1

    stamps = {name: (out / name).stat().st_mtime_ns for name in ("float.keras", "qat.keras", "int8.tflite")}
    again = call_cli(capsys, "recipe", "--out", out)
    assert again.returncode == 0, again.stderr
    for step, name in (("train", "float.keras"), ("qat", "qat.keras"), ("export", "float.tflite")):
        assert f"[{step}] done before, reusing {name}" in again.stdout
    assert stamps == {name: (out / name).stat().st_mtime_ns for name in stamps}
    assert json.loads((out / "report.json").read_text())["int8"]["accuracy"] == int8_accuracy
    refused = call_cli(capsys, "recipe", "--out", out, "--epochs", "3")
    assert_one_line_error(refused, "--epochs: 2 there, 3 now", "leave the flag out")


@pytest.mark.slow
@keras_3_only
@needs_mediapipe
def test_the_recipes_models_run_in_mediapipe_with_names_and_our_predictions(digits_run):
    """Issue 12: float.tflite (float32 in, normalization metadata) and int8.tflite (float32 pixels in, uint8 out) in
    MediaPipe's ImageClassifier: digit names come out, and its top-1 equals our LiteRT top-1 on every validation image."""
    from keras_mbv3.quantization import read_metadata
    from keras_mbv3.quantization.litert import interpreter, predict
    from keras_mbv3.recipes import tasks

    out = digits_run[0]
    images = np.round(np.concatenate([x for x, _ in tasks.load("digits").val.as_numpy_iterator()]))  # 359
    for name in ("float.tflite", "int8.tflite"):
        content = (out / name).read_bytes()
        metadata = read_metadata(content)
        assert metadata.labels == tuple("0123456789") and metadata.name == "MobileNetV3Small"
        runner = interpreter(content)
        assert runner.get_input_details()[0]["dtype"] == np.float32
        assert runner.get_output_details()[0]["dtype"] == (np.float32 if name == "float.tflite" else np.uint8)
        ours = predict(runner, images).argmax(-1)
        theirs = classify(out / name, images, max_results=1)
        assert [int(label) for ((_, label, _),) in theirs] == ours.tolist()


@pytest.mark.slow
@keras_3_only
@needs_mediapipe
def test_the_mediapipe_code_in_report_md_runs_on_the_shipped_file(digits_run, tmp_path):
    from PIL import Image

    from keras_mbv3.recipes import data as data_lib

    out = digits_run[0]
    report = (out / "report.md").read_text()
    code = report[report.index("```python\n") + len("```python\n"):report.rindex("```")]
    (tmp_path / "int8.tflite").write_bytes((out / "int8.tflite").read_bytes())
    (_, _), (images, labels) = data_lib.digits(32)
    Image.fromarray(images[0].astype(np.uint8)).save(tmp_path / "photo.jpg")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"category_name='{labels[0]}'" in result.stdout


@pytest.mark.slow
@keras_3_only  # tf_keras runs tf.distribute in the multi-worker test
@needs_mediapipe
def test_segmentation_run_with_mirrored_strategy_and_steps_that_take_the_folders_settings(tmp_path, capsys):
    """LR-ASPP trained and QAT'd on 2 logical CPUs by the recipe; then export and eval given only --out (issue 15:
    they were refused, or failed, until --task segmentation was repeated); MediaPipe's ImageSegmenter runs both
    exports (issue 12): its masks equal our argmax on at least 99% of the pixels. The recipe, with --cpu-devices,
    runs in a new process (the devices are set before TensorFlow starts); the other steps in this one."""
    out = tmp_path / "run"
    steps = [("recipe", "--task", "segmentation", "--epochs", "1", "--qat-epochs", "1", "--batch-size", "128",
              "--strategy", "mirrored", "--cpu-devices", "2"), ("export",), ("export", "--overwrite"), ("eval",)]  # fmt: skip
    stamps, printed = [], []
    for step, *flags in steps:
        result = run_cli(step, "--out", out, *flags) if "--cpu-devices" in flags else call_cli(capsys, step, "--out",
                                                                                                  out, *flags)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert ("strategy: mirrored, 2 replica(s)" in result.stdout) == (step == "recipe")
        stamps.append((out / "int8.tflite").stat().st_mtime_ns)
        printed.append(result.stdout)
    assert "[export] done before, reusing float.tflite, int8.tflite" in printed[1]
    assert stamps[0] == stamps[1] < stamps[2]  # written by the recipe, reused by export, --overwrite exported again
    settings = json.loads((out / "settings.json").read_text())
    assert settings["task"] == "segmentation" and settings["data"] == "digits-seg"
    assert (out / "qat.keras").exists() and epochs_logged(out / "qat_history.csv") == [0]
    miou = json.loads(result.stdout[result.stdout.index("{"):])
    assert set(miou) == {"float", "int8"} and all(0 <= figures["miou"] <= 1 for figures in miou.values())
    wrong = call_cli(capsys, "eval", "--out", out, "--task", "classification", "--file", out / "int8.tflite")
    assert_one_line_error(wrong, "--task: 'segmentation' there")
    elsewhere = call_cli(capsys, "eval", "--out", tmp_path / "other", "--file", out / "int8.tflite")  # digits
    assert_one_line_error(elsewhere, "`--file`", "classifier of 10 classes", "segmentation model of 11 classes")

    from keras_mbv3.quantization.litert import interpreter, predict
    from keras_mbv3.recipes import tasks

    images = np.round(next(tasks.load("digits-seg", "segmentation").val.as_numpy_iterator())[0])  # 64 images
    for name in ("float.tflite", "int8.tflite"):
        labels, masks = segment(out / name, images)
        assert labels == ("background", *"0123456789")
        ours = predict(interpreter((out / name).read_bytes()), images).argmax(-1)
        assert np.mean(masks == ours) >= 0.99, name


def free_ports(count):
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
@legacy_only  # Keras 3 cannot train with MultiWorkerMirroredStrategy (keras-team/keras#20585)
def test_multi_worker_recipe_with_two_local_workers(tmp_path, capsys):
    """`mbv3 recipe --strategy multi-worker` on two local workers: both train and QAT, the chief alone exports,
    evaluates and reports (one process a worker: the same train and qat steps as `mbv3 train` and `mbv3 qat`)."""
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    # a 36-image folder, 3 steps of 12 an epoch: what is tested is the workers' agreement, not accuracy (on digits,
    # 23 steps, the test took 170 s alone and 295 s beside the Keras 3 line)
    folder, processes = three_class_folder(tmp_path / "set"), []
    for index in range(2):
        env = {**USER_ENV, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        # a shared --out, as on a shared file system
        args = [sys.executable, "-m", "keras_mbv3", "recipe", "--out", str(tmp_path / "run"), "--epochs", "1",
                "--qat-epochs", "1", "--strategy", "multi-worker", "--data", str(folder), "--batch-size", "12"]
        log = open(tmp_path / f"worker{index}.log", "w")  # files, not pipes: a full pipe would stall a worker
        processes.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, text=True, env=env))
    outputs = []
    for index, process in enumerate(processes):
        process.wait(timeout=600)
        outputs.append((tmp_path / f"worker{index}.log").read_text())
        assert process.returncode == 0, outputs[-1][-3000:]
        assert outputs[-1].count("strategy: multi-worker, 2 replica(s)") == 1
    assert "[export] wrote" in outputs[0] and "[export]" not in outputs[1]  # the chief's
    out = tmp_path / "run"
    assert epochs_logged(out / "float_history.csv") == [0] and epochs_logged(out / "qat_history.csv") == [0]  # the chief's
    assert sorted(p.name for p in out.iterdir()) == [
        "bench.json", "eval.json", "float.keras", "float.tflite", "float_history.csv", "int8.tflite", "qat.h5",
        "qat_history.csv", "report.json", "report.md", "report.png", "settings.json", "timings.json"]  # fmt: skip
    settings = json.loads((out / "settings.json").read_text())
    assert settings["keras"] == "tf_keras" and settings["epochs"] == settings["qat_epochs"] == 1
    report = json.loads((out / "report.json").read_text())
    assert 0 <= report["int8"]["accuracy"] <= 1  # the tfmot QAT model, on tf_keras, to a fully int8 file
    again = call_cli(capsys, "qat", "--out", out)  # a later step on one process takes the workers' folder
    assert again.returncode == 0 and "[qat] done before, reusing qat.h5" in again.stdout


def test_bad_data_folders_are_one_clear_line(capsys, tmp_path):
    (tmp_path / "set" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "set" / "val" / "cat").mkdir(parents=True)
    result = call_cli(capsys, "train", "--data", tmp_path / "set", "--out", tmp_path / "run")
    assert_one_line_error(result, "`--data`", "empty")  # a class folder without images
    result = call_cli(capsys, "train", "--data", tmp_path / "set" / "train", "--out", tmp_path / "run")
    assert_one_line_error(result, "`--data`", "val/")  # not the ImageNet layout
    assert not (tmp_path / "run" / "float.keras").exists()


@pytest.mark.slow
@legacy_only  # the Keras 3 line runs the other case, digits --epochs 2, in the kill test
def test_a_small_folder_trained_for_8_steps_evaluates_at_its_training_mode_accuracy(tmp_path, capsys):
    """Issue 15: 36 training images, 8 epochs of 1 step: 100% in training mode, 33% (chance) in inference mode."""
    from keras_mbv3.backend import keras
    from keras_mbv3.recipes import tasks

    folder, out = three_class_folder(tmp_path / "set"), tmp_path / "run"
    trained = call_cli(capsys, "train", "--data", folder, "--epochs", "8", "--out", out)
    assert trained.returncode == 0, trained.stderr
    assert "BatchNormalization statistics of the final weights, from 36 training images" in trained.stdout
    evaluation = call_cli(capsys, "eval", "--out", out, "--file", out / "float.keras")  # the folder's --data
    assert evaluation.returncode == 0, evaluation.stderr
    assert json.loads(evaluation.stdout[evaluation.stdout.index("{"):])["float.keras"]["accuracy"] >= 0.75

    model = keras.models.load_model(str(out / "float.keras"))
    images, labels = next(iter(tasks.load(str(folder), holdout=35).holdout))  # 35 of the 36, unaugmented
    inference = np.mean(np.argmax(model(images, training=False), -1) == np.argmax(labels, -1))
    training_mode = np.mean(np.argmax(model(images, training=True), -1) == np.argmax(labels, -1))
    assert training_mode >= 0.9 and abs(inference - training_mode) <= 0.05


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_every_default_and_the_forms_of_data(capsys, command):
    from keras_mbv3.recipes.settings import SETTINGS, flag

    from keras_mbv3.recipes.cli import USES

    text = " ".join(call_cli(capsys, command, "--help").stdout.split())
    shown = [name for name in SETTINGS if flag(name) + " " in text]
    assert ("data" in shown) == ("data" in USES[command]) and ("model" in shown) == ("model" in USES[command])
    for name in shown:
        default = SETTINGS[name][0]
        assert default is None or f"else {default})" in text, name
    if "data" in shown:
        assert all(form in text for form in ("digits", "digits-seg", "train/ and val/", "images/ and masks/", "tfds:NAME"))
    for option, default in (("--strategy", "default"), ("--cpu-devices", "1"), ("--threads", "1")):
        assert option + " " not in text or f"(default: {default})" in text


def test_results_older_than_their_sources_are_refused_not_reused(capsys, tmp_path):
    """An int8.tflite older than qat.keras, a qat.keras older than float.keras (retrained): refused, kept."""
    out = tmp_path / "run"
    out.mkdir()
    for name in ("float.keras", "qat.keras", "qat.h5", "float.tflite", "int8.tflite"):
        (out / name).write_bytes(b"model")
    os.utime(out / "int8.tflite", (1_000_000, 1_000_000))
    assert_one_line_error(call_cli(capsys, "export", "--out", out), "int8.tflite is older", "--overwrite")
    assert (out / "int8.tflite").read_bytes() == b"model"
    for name in ("qat.keras", "qat.h5"):
        os.utime(out / name, (1_000_000, 1_000_000))
    assert_one_line_error(call_cli(capsys, "qat", "--out", out), "is older", "delete it")


NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@pytest.fixture(scope="module")
def labelled_models(tmp_path_factory):
    """Untrained 32 px models exported with metadata: a classifier of digits' 10 classes, a 3-class segmenter;
    and a PNG and a JPEG image."""
    from PIL import Image

    from keras_mbv3.backend import keras
    from keras_mbv3.quantization import ImageModelMetadata, export_tflite

    folder = tmp_path_factory.mktemp("labelled")
    inputs = keras.Input((32, 32, 3))
    features = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(keras.layers.Rescaling(1 / 255)(inputs))
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    classifier = keras.Model(inputs, keras.layers.Softmax()(keras.layers.Dense(10)(pooled)))
    segmenter = keras.Model(inputs, keras.layers.Conv2D(3, 1)(features))
    paths = {"classifier": str(folder / "classifier.tflite"), "segmenter": str(folder / "segmenter.tflite"),
             "png": str(folder / "a.png"), "jpeg": str(folder / "b.jpg")}  # fmt: skip
    export_tflite(classifier, paths["classifier"], quantization="float32",
                  metadata=ImageModelMetadata("classification", NAMES))  # fmt: skip
    export_tflite(segmenter, paths["segmenter"], quantization="float32",
                  metadata=ImageModelMetadata("segmentation", ("background", "ink", "paper")))  # fmt: skip
    pixels = np.random.default_rng(0).integers(0, 256, (48, 40, 3)).astype(np.uint8)  # resized to 32x32 on reading
    Image.fromarray(pixels).save(paths["png"])
    Image.fromarray(pixels).save(paths["jpeg"], quality=90)
    return paths


def test_predict_prints_the_names_in_the_model_for_a_png_and_a_jpeg(labelled_models, tmp_path, capsys):
    models = labelled_models
    result = call_cli(capsys, "predict", "--file", models["classifier"], models["png"], models["jpeg"], "--top-k", "3")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith((models["png"], models["jpeg"]))]
    assert [line.split(":")[0] for line in lines] == [models["png"], models["jpeg"]]
    for line in lines:
        shown = [part.rsplit(" ", 1) for part in line.split(": ", 1)[1].split(", ")]
        assert len(shown) == 3 and all(name in NAMES and 0 <= float(score) <= 1 for name, score in shown)


def test_predict_json_bad_images_and_segmentation_overlays(capsys, labelled_models, tmp_path):
    models = labelled_models
    result = call_cli(capsys, "predict", "--file", models["classifier"], models["png"], "--json")
    (found,) = json.loads(result.stdout[result.stdout.index("["):])
    assert found["image"] == models["png"] and [t["name"] for t in found["top"]] == [NAMES[t["class"]] for t in found["top"]]
    (tmp_path / "notes.png").write_text("not an image")
    assert_one_line_error(call_cli(capsys, "predict", "--file", models["classifier"], tmp_path / "notes.png"),
                          "`IMAGE`", "notes.png", "PNG, JPEG")  # fmt: skip
    assert_one_line_error(call_cli(capsys, "predict", "--file", models["classifier"], tmp_path / "none.jpg"),
                          "`IMAGE`", "not found")  # fmt: skip

    overlays = tmp_path / "overlays"
    result = call_cli(capsys, "predict", "--file", models["segmenter"], models["png"], "--overlays", overlays)
    assert result.returncode == 0, result.stderr
    from PIL import Image

    assert Image.open(overlays / "a.overlay.png").size == (32, 32)
    assert "a.overlay.png" in result.stdout and any(name in result.stdout for name in ("background", "ink", "paper"))
    again = call_cli(capsys, "predict", "--file", models["segmenter"], models["png"], "--overlays", overlays)
    assert_one_line_error(again, "a.overlay.png", "--overwrite")
    assert call_cli(capsys, "predict", "--file", models["segmenter"], models["png"], "--overlays", overlays,
                    "--overwrite").returncode == 0  # fmt: skip


def test_eval_and_bench_take_model_files_without_a_run_folder(capsys, labelled_models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    models = labelled_models
    result = call_cli(capsys, "eval", models["classifier"], "--data", "digits")
    assert result.returncode == 0, result.stderr
    assert 0 <= json.loads(result.stdout[result.stdout.index("{"):])["classifier.tflite"]["accuracy"] <= 1
    result = call_cli(capsys, "bench", models["classifier"], models["segmenter"])
    latency = json.loads(result.stdout[result.stdout.index("{"):])
    assert set(latency) == {"classifier.tflite", "segmenter.tflite"} and all(v["latency_ms"] > 0 for v in latency.values())
    assert_one_line_error(call_cli(capsys, "eval"), "`--out`", "model files")
    assert os.listdir(tmp_path) == []  # no run folder, nothing written


def digits_coco_folder(root, train=96, val=24, size=64):
    """digits-det canvases written as a COCO-format folder (train/ and val/, PNGs and annotations.json)."""
    from keras_mbv3.recipes import data, detection_data

    return detection_data.write_coco_folder(root, *detection_data.digits_detection(size, train, val), data.DIGIT_NAMES)


@pytest.fixture(scope="module")
def detection_run(tmp_path_factory):
    """`recipe --task detection` on a COCO-format folder of 96 + 24 digits-det canvases at 64 px, 2 + 1 epochs."""
    work = tmp_path_factory.mktemp("detection_run")
    folder = digits_coco_folder(work / "coco")
    result = call_cli_captured("recipe", "--task", "detection", "--data", str(folder), "--image-size", "64", "--epochs",
                               "2", "--qat-epochs", "1", "--batch-size", "32", "--out", str(work / "run"))  # fmt: skip
    return work / "run", result


@pytest.mark.slow
def test_detection_recipe_reports_map_of_one_partition_int8_with_the_post_process(capsys, detection_run):
    """On both Keras lines (the tfmot engine quantizes SSDLite on tf_keras); eval and bench take the files alone."""
    from keras_mbv3.quantization import read_metadata
    from keras_mbv3.quantization.litert import graph_report
    from keras_mbv3.quantization.postprocess import CUSTOM_OP

    out, result = detection_run
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    for kind in ("float", "int8"):
        assert 0 <= report[kind]["map"] <= report[kind]["map50"] <= 1 and report[kind]["latency_ms"] > 0
    assert "| | map |" in (out / "report.md").read_text() and "ObjectDetector" in (out / "report.md").read_text()
    # 96 canvases in batches of 32: 3 steps an epoch; the length rule: 1,000 epochs (3,000 steps), 2 given
    advice = "train longer: --epochs 1000"
    assert advice in report["advice"] and advice in (out / "report.md").read_text() and advice in result.stdout
    content = (out / "int8.tflite").read_bytes()
    graph = graph_report(content)
    assert graph["partitions"] == 1 and graph["undelegated"] == {CUSTOM_OP: 1}
    metadata = read_metadata(content)
    assert metadata.task == "detection" and metadata.labels == tuple("0123456789")
    assert json.loads((out / "settings.json").read_text())["keras"] == FLAVOUR

    files = [out / "float.tflite", out / "int8.tflite"]
    evaluated = call_cli(capsys, "eval", *files, "--data", out.parent / "coco")  # the files' task and image size
    assert evaluated.returncode == 0, evaluated.stderr
    figures = json.loads(evaluated.stdout[evaluated.stdout.index("{"):])
    assert [figures[f.name]["map50"] for f in files] == [report[kind]["map50"] for kind in ("float", "int8")]
    benched = call_cli(capsys, "bench", *files)
    assert benched.returncode == 0, benched.stderr


@pytest.mark.slow
@keras_3_only
@needs_mediapipe
def test_mediapipe_object_detector_gives_our_detections_on_the_recipes_files(detection_run):
    """The shipped files in MediaPipe's ObjectDetector: every LiteRT detection of ours with its digit name and score,
    and, for boxes inside the image, the box to MediaPipe's whole pixels (it clamps boxes that leave the image)."""
    from mediapipe_client import detect

    from keras_mbv3.quantization.litert import interpreter
    from keras_mbv3.recipes import tasks

    out, _ = detection_run
    images = np.round(next(tasks.load(str(out.parent / "coco"), "detection", 64).evaluation.as_numpy_iterator())[0][:8])
    compared = 0
    for name in ("float.tflite", "int8.tflite"):
        runner = interpreter((out / name).read_bytes()).get_signature_runner()
        for image, theirs in zip(images, detect(out / name, images)):
            found = runner(**{next(iter(runner.get_input_details())): image[None]})
            count = int(found["num_detections"][0])
            ours = [(str(int(c)), float(s), b) for b, c, s in zip(found["detection_boxes"][0][:count] * 64,
                    found["detection_classes"][0][:count], found["detection_scores"][0][:count])]  # fmt: skip
            key = lambda entry: (entry[0], round(entry[1], 6))  # noqa: E731
            assert sorted(map(key, theirs)) == sorted(map(key, ours))  # every detection, name and score
            for entry in ours:  # inside the image, MediaPipe's box is ours in whole pixels
                (ymin, xmin, ymax, xmax) = entry[2]
                if min(ymin, xmin) >= 0 and max(ymax, xmax) <= 64:  # int8 scores may tie: any box of that key
                    assert any(np.allclose(pixels, (xmin, ymin, xmax - xmin, ymax - ymin), atol=1.01)
                               for found_key, pixels in ((key(e), e[2]) for e in theirs) if found_key == key(entry))
            compared += len(ours)
    assert compared >= 16  # digits named "0".."9" by the metadata, and boxes to compare


@pytest.mark.slow
def test_predict_draws_the_detections(capsys, detection_run, tmp_path):
    from PIL import Image

    from keras_mbv3.recipes import tasks

    out, _ = detection_run
    image = next(tasks.load(str(out.parent / "coco"), "detection", 64).evaluation.as_numpy_iterator())[0][0]
    Image.fromarray(image.astype(np.uint8)).save(tmp_path / "canvas.png")
    result = call_cli(capsys, "predict", "--file", out / "int8.tflite", tmp_path / "canvas.png", "--overlays",
                      tmp_path / "drawn", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    (found,) = json.loads(result.stdout[result.stdout.index("["):])
    assert Image.open(found["overlay"]).size == (64, 64)
    assert all(o["name"] in "0123456789" and o["score"] >= 0.3 and len(o["box"]) == 4 for o in found["objects"])

