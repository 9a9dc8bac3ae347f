"""The run's steps in this process: the shared fit routine (training.train) and Run's rules for reusing, refusing and
recording (issue 23: Run and the steps had only CLI subprocess tests)."""

import json
import os
import time

import numpy as np
import pytest

from keras_mbv3.backend import keras
from keras_mbv3.quantization.qat import is_qat_model
from keras_mbv3.recipes import recipe, tasks, training
from keras_mbv3.recipes.settings import LENGTH_STEPS, TASK_DEFAULTS
from cli_helpers import three_class_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """36 training and 12 validation images of 3 classes (``recipe``'s classification folder form)."""
    return three_class_folder(tmp_path_factory.mktemp("set") / "set", per_split=(("train", 12), ("val", 4)), side=32)


def load(folder):
    """The folder's data set as a new process loads it (its random ops seeded alike)."""
    keras.utils.set_random_seed(0)
    return tasks.load(str(folder), "classification", image_size=32, batch_size=8)


def tiny_classifier(steps, calls):
    """A two-layer classifier of 3 classes; records the steps it was made for."""
    calls.append(("make", steps))
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, strides=4)(keras.layers.Rescaling(1 / 255)(inputs))
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


def test_train_seeds_makes_compiles_records_fits_and_recomputes_bn(folder, tmp_path):
    plan = training.Fit("classification", rate=1e-2, epochs=2, batch_size=8, seed=3)
    runs = []
    for work in ("a", "b"):
        calls, made = [], []

        def make_model(steps):
            made.append(tiny_classifier(steps, calls))
            return made[-1]

        def before_fit():
            calls.append(("before_fit", made[-1].optimizer is not None, os.path.exists(tmp_path / f"{work}_history.csv")))

        model, log_dir, bn_images = training.train(plan, make_model, load(folder), str(tmp_path), work,
                                                   training.strategy("default"), before_fit=before_fit, precise_bn=True)  # fmt: skip
        runs.append([np.asarray(w) for w in model.weights])
        # 36 images in batches of 8: 5 steps an epoch; compiled before before_fit, fitted after it
        assert calls == [("make", 2 * 5), ("before_fit", True, False)]
        assert len(training.read_history(os.path.join(log_dir, f"{work}_history.csv"))["loss"]) == 2
        assert bn_images == 36 and log_dir == str(tmp_path)
        training.release(training.strategy("default"), str(tmp_path), work, log_dir)
        assert not os.path.exists(tmp_path / f"{work}_backup")
    # the same seed and the data set loaded as a new process loads it: the same model, batches and updates
    assert all(np.array_equal(a, b) for a, b in zip(*runs))


@pytest.fixture
def run_folder(folder, tmp_path):
    """A run folder as `mbv3 train` leaves it, without training: settings.json and a float.keras."""
    out = tmp_path / "run"
    run = recipe.Run(str(out), data=str(folder), image_size=32, batch_size=8, epochs=1, log=lambda line: None)
    run.record_settings(recipe.STEPS["train"].records)
    tiny_classifier(1, []).save(out / "float.keras")
    return out


def test_a_step_reuses_its_output_and_refuses_one_older_than_its_source(run_folder, folder):
    lines = []
    run = recipe.Run(str(run_folder), log=lines.append)
    assert run.settings["data"] == str(folder) and run.settings["image_size"] == 32  # from settings.json
    qat = run_folder / recipe.FILES["qat"]
    qat.write_bytes(b"a QAT model")  # only its presence and age are read
    run.qat()
    assert lines == [f"[qat] done before, reusing {recipe.FILES['qat']}"]
    past = time.time() - 60
    os.utime(qat, (past, past))  # float.keras trained again since
    with pytest.raises(FileExistsError, match=f"whose {recipe.FILES['qat']} is newer than float.keras|"
                                              f"{recipe.FILES['qat']} is older"):  # fmt: skip
        run.qat()


def test_a_flag_that_contradicts_the_folder_is_refused_and_nothing_is_written(run_folder):
    before = (run_folder / "settings.json").read_text()
    with pytest.raises(FileExistsError, match="--batch-size: 8 there, 16 now"):
        recipe.Run(str(run_folder), batch_size=16, log=lambda line: None).qat()
    assert (run_folder / "settings.json").read_text() == before
    assert json.loads(before)["batch_size"] == 8


TRAIN_SETTINGS = recipe.STEPS["train"].records


def test_each_step_records_the_settings_it_runs_with_in_this_order():
    """What settings.json holds and a contradicting flag is checked against (a key dropped here would let a later
    step run with other settings than the folder's results)."""
    data = ("data", "task", "image_size", "batch_size", "seed")
    assert {name: step.records for name, step in recipe.STEPS.items()} == {
        "train": ("data", "task", "model", "alpha", "image_size", "batch_size", "seed", "epochs", "weights", "keras",
                  "backend", "data_dir"),
        "import": (*data, "keras", "backend", "data_dir"),
        "adapt": (*data, "data_dir"),
        "qat": (*data, "qat_epochs", "keras", "backend", "data_dir"),
        "export": (),
        "export --ptq": (),
        "eval": (*data, "data_dir"),
    }  # fmt: skip


def test_each_step_begins_by_naming_the_command_that_makes_a_file_it_needs(run_folder):
    run = recipe.Run(str(run_folder), log=lambda line: None)
    for name in recipe.STEPS:  # float.keras is there, qat.keras is not
        if name != "export":
            assert run.begin(name) is recipe.STEPS[name]
    with pytest.raises(FileNotFoundError, match=r"holding qat.* \(run `mbv3 qat --out .*` first\)"):
        run.begin("export")
    with pytest.raises(FileNotFoundError, match="holding qat"):  # a missing file before a contradicting flag
        recipe.Run(str(run_folder), batch_size=16, log=lambda line: None).begin("export")
    os.remove(run_folder / "float.keras")
    for name, step in recipe.STEPS.items():
        if step.needs:
            with pytest.raises(FileNotFoundError, match=r"holding float.keras \(run `mbv3 train --out .*` first\)"):
                run.begin(name)


def test_qat_given_only_out_takes_the_folders_task(tmp_path, monkeypatch):
    """Issue 15: `mbv3 qat --out SEG_RUN` fitted a classifier's loss until --task segmentation was repeated. The
    plan handed to the fit routine names the folder's task (the fit itself is stopped there)."""
    out = tmp_path / "run"
    recipe.Run(str(out), task="segmentation", image_size=32, batch_size=8, log=lambda line: None).record_settings(
        TRAIN_SETTINGS)
    tiny_classifier(1, []).save(out / "float.keras")
    plans = []

    def train(plan, *args, **kwargs):
        plans.append(plan)
        raise KeyboardInterrupt  # stands for the fit: nothing after it is asked of this test

    monkeypatch.setattr(training, "train", train)
    with pytest.raises(KeyboardInterrupt):
        recipe.Run(str(out), log=lambda line: None).qat()
    assert [(plan.task, plan.epochs, plan.batch_size) for plan in plans] == [("segmentation", 3, 8)]


def test_adapt_refuses_a_task_before_reading_data_and_too_few_images_before_writing(tmp_path, monkeypatch):
    out = tmp_path / "seg"
    recipe.Run(str(out), task="segmentation", image_size=32, log=lambda line: None).record_settings(TRAIN_SETTINGS)
    tiny_classifier(1, []).save(out / "float.keras")
    with monkeypatch.context() as patched:
        patched.setattr(tasks, "load", lambda *args, **kwargs: pytest.fail("the data were read"))
        with pytest.raises(ValueError, match=r"`--task`: received --task='segmentation'.*allowed: classification"):
            recipe.Run(str(out), log=lambda line: None).adapt(target_ratio=0.7)
    few = three_class_folder(tmp_path / "few", per_split=(("train", 1), ("val", 1)), side=32)  # 3 training images
    out = tmp_path / "few_run"
    recipe.Run(str(out), data=str(few), image_size=32, log=lambda line: None).record_settings(TRAIN_SETTINGS)
    tiny_classifier(1, []).save(out / "float.keras")
    with pytest.raises(ValueError, match=r"`--data`.*few.*at least 5 training images"):
        recipe.Run(str(out), log=lambda line: None).adapt(target_ratio=0.7)
    assert not (out / "adapt").exists() and not (out / "adapted.keras").exists()


def test_qat_takes_the_adapted_model_once_adapt_wrote_it(run_folder, monkeypatch):
    """Issue 14: the steps after `mbv3 adapt` take adapted.keras in place of float.keras; the QAT model the fit
    routine is handed is made from it (here: the fit itself is stopped there)."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="adapted_head")(x)).save(
        run_folder / "adapted.keras")
    made, lines = [], []

    def train(plan, make_model, *args, **kwargs):
        made.append(make_model(10))
        raise KeyboardInterrupt  # stands for the fit

    monkeypatch.setattr(training, "train", train)
    with pytest.raises(KeyboardInterrupt):
        recipe.Run(str(run_folder), log=lines.append).qat()
    assert "[qat] from adapted.keras" in lines
    assert any("adapted_head" in layer.name for layer in made[0].layers) and is_qat_model(made[0])  # tfmot: quant_


def test_every_task_trains_100_epochs_within_the_rules_step_bounds():
    low, high = LENGTH_STEPS
    for name in tasks.NAMES:
        task = tasks.get(name)
        assert task.default_epochs(4000, 64) == 100  # 63 steps an epoch: 6,300 steps
        assert task.default_epochs(800, 64) == -(-low // 13)  # 13 steps an epoch: at least `low` steps
        assert task.default_epochs(800, 64) * 13 >= low > (task.default_epochs(800, 64) - 1) * 13
        assert task.default_epochs(10 ** 6, 64) == high // 15625  # at most `high` steps, whole epochs
        assert task.default_epochs(1, 64) == low  # one step an epoch
        assert recipe.Run(None, task=name, log=lambda line: None).settings["epochs"] is None  # known at train
        assert recipe.Run(None, task=name, epochs=7, log=lambda line: None).settings["epochs"] == 7


def test_a_run_shorter_than_the_rule_is_told_to_train_longer():
    history = {"val_loss": [9.0, 6.0, 5.0, 4.9, 4.8, 4.7, 4.6, 4.5]}
    for name in tasks.NAMES:
        task = tasks.get(name)
        advice = task.length_advice(8, 800, 64, history)  # 13 steps an epoch; the rule: 231 epochs
        assert advice == ("8 epochs (104 steps) are fewer than the 231 (3,003 steps) of the length rule for 800 "
                          "training images; the validation loss fell 4.3% over the last 2 epoch(s): train longer: "
                          "--epochs 231")  # fmt: skip
        assert task.length_advice(231, 800, 64, history) is None and task.length_advice(300, 800, 64, {}) is None
        assert task.length_advice(1, 800, 64, {}).endswith("800 training images: train longer: --epochs 231")


@pytest.fixture
def stopped_before_fit(monkeypatch):
    """``training.train`` recording its plans, then stopping once the run has recorded its settings."""
    plans = []

    def train(plan, make_model, loaded, work_dir, log_name, distribution, callbacks, before_fit, precise_bn):
        plans.append(plan)
        before_fit()  # the settings are recorded
        raise KeyboardInterrupt  # stands for the fit

    monkeypatch.setattr(training, "train", train)
    return plans


def test_detection_takes_the_length_rule_and_the_datas_stride_records_both_logs_why(tmp_path, stopped_before_fit):
    """The length by the data set's size; the first map's stride by its boxes: digits of 25-60% of the side -> 16,
    of 6-12% (under stride 16's smallest anchor, 0.2) -> 8 (issue 24)."""
    from keras_mbv3.recipes import data, detection_data

    plans, lines = stopped_before_fit, []
    low = LENGTH_STEPS[0]  # 8 images in batches of 8: one step an epoch
    for scales, stride in (((0.25, 0.6), 16), ((0.06, 0.12), 8)):
        name = f"{stride}"
        folder = detection_data.write_coco_folder(tmp_path / f"coco{name}", *detection_data.digits_detection(
            64, 8, 4, scales=scales), data.DIGIT_NAMES)  # fmt: skip
        run = recipe.Run(str(tmp_path / name), task="detection", data=str(folder), image_size=64, batch_size=8,
                         log=lines.append)  # fmt: skip
        assert run.task.min_stride is None  # left to the data, until they load
        with pytest.raises(KeyboardInterrupt):
            run.train()
        recorded = json.loads((tmp_path / name / "settings.json").read_text())
        assert (recorded["epochs"], recorded["min_stride"], run.task.min_stride) == (low, stride, stride)
        assert any(line.startswith(f"[data] min stride {stride}, chosen by the data: the training boxes' median side, ")
                   for line in lines)  # fmt: skip
        assert recipe.Run(str(tmp_path / name)).task.min_stride == stride  # a later step reads the folder's
        other = {16: 8, 8: 16}[stride]
        with pytest.raises(FileExistsError, match=f"--min-stride: {stride} there, {other} now"):
            recipe.Run(str(tmp_path / name), min_stride=other, log=lines.append).train()
    assert [plan.epochs for plan in plans] == [low, low]
    assert f"[train] {low} epochs ({low:,} steps of 8 images): {tasks.get('detection').EPOCHS_RULE}" in lines
    given = tasks.load(str(folder), "detection", image_size=64, min_stride=16, log=lines.append)  # a flag: no choice
    assert given.task.min_stride == 16 and TASK_DEFAULTS["detection"]["min_stride"] is None


def test_classification_without_epochs_trains_by_the_rule_and_records_the_number(folder, tmp_path, stopped_before_fit):
    plans, lines = stopped_before_fit, []
    with pytest.raises(KeyboardInterrupt):
        recipe.Run(str(tmp_path / "run"), data=str(folder), image_size=32, batch_size=8, log=lines.append).train()
    epochs = -(-LENGTH_STEPS[0] // 5)  # 36 training images in batches of 8: 5 steps an epoch
    assert [plan.epochs for plan in plans] == [epochs]
    assert json.loads((tmp_path / "run" / "settings.json").read_text())["epochs"] == epochs
    assert f"[train] {epochs} epochs ({epochs * 5:,} steps of 8 images): {tasks.get('classification').EPOCHS_RULE}" in lines


def test_min_stride_is_detections_option_checked_before_anything_is_read(tmp_path):
    with pytest.raises(ValueError, match=r"--min-stride=8.*left out for --task classification \(an option of --task "
                       "detection"):  # fmt: skip
        recipe.Run(str(tmp_path / "a"), min_stride=8)
    with pytest.raises(ValueError, match=r"--min-stride=4.*one of 16, 8"):
        recipe.Run(str(tmp_path / "b"), task="detection", min_stride=4)
    run = recipe.Run(str(tmp_path / "c"), task="detection", min_stride=8)
    assert run.task.min_stride == 8 and run.records(recipe.STEPS["qat"])[-1] == "min_stride"
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "c")
    assert tasks.get("detection") is tasks.get("detection", min_stride=None)  # the default filled in: one instance
    with pytest.raises(ValueError, match=r"--min-stride=8.*left out for --task segmentation"):
        tasks.load("digits-seg", "segmentation", min_stride=8)


def test_a_folder_from_before_min_stride_holds_16_and_one_of_8_clashes_on_task_not_on_the_option(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "settings.json").write_text(json.dumps({"task": "detection", "data": "digits-det", "image_size": 96}))
    with pytest.raises(FileExistsError, match="--min-stride: 16 there, 8 now"):
        recipe.Run(str(old), min_stride=8, log=lambda line: None).begin("eval")
    eight = tmp_path / "eight"
    eight.mkdir()
    (eight / "settings.json").write_text(json.dumps({"task": "detection", "min_stride": 8}))
    assert recipe.Run(str(eight)).task.min_stride == 8  # a later step given only --out
    with pytest.raises(FileExistsError, match=r"--task: 'detection' there, 'classification' now"):
        recipe.Run(str(eight), task="classification").begin("eval")
