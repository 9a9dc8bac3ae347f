"""The run's steps in this process: the shared fit routine (training.train) and Run's rules for reusing, refusing and
recording (issue 23: Run and the steps had only CLI subprocess tests)."""

import json
import os
import time

import numpy as np
import pytest

from keras_mbv3.backend import keras
from keras_mbv3.recipes import recipe, tasks, training
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
    run.record_settings(["data", "task", "model", "alpha", "image_size", "batch_size", "seed", "epochs", "weights",
                         "keras", "backend", "data_dir"])  # fmt: skip
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
