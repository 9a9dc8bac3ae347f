"""NetAdapt's latency table: units, caching in the run folder, calibration (LiteRT int8 at 1 thread, tiny units)."""

import numpy as np
import pytest

from keras_mbv3.adapt import latency, widths
from keras_mbv3.backend import keras
from keras_mbv3.layers import InvertedResidual


IMAGES = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")  # an untrained model's


def tiny():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="rescaling")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="conv")(x)
    x = keras.layers.BatchNormalization(name="conv_bn")(x)
    x = keras.layers.ReLU(name="conv_relu")(x)
    x = InvertedResidual(16, expanded_filters=48, name="expanded_conv")(x)
    x = InvertedResidual(24, strides=2, expanded_filters=64, name="expanded_conv_1")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


@pytest.fixture
def measured(monkeypatch):
    """The unit keys measured, call by call."""
    calls, measure = [], latency.measure_units

    def spy(unit_list, *args, **kwargs):
        calls.append([latency.key(unit) for unit in unit_list])
        return measure(unit_list, *args, **kwargs)

    monkeypatch.setattr(latency, "measure_units", spy)
    return calls


def test_units_start_at_each_layer_that_holds_a_conv():
    names = [[link.config["name"] for link in unit] for unit in latency.units(latency.links(tiny()))]
    assert names == [["rescaling", "conv", "conv_bn", "conv_relu"], ["expanded_conv"], ["expanded_conv_1", "pool"],
                     ["logits"]]  # fmt: skip


def test_the_table_measures_each_unit_shape_once_and_keeps_it_in_its_file(tmp_path, measured):
    model, path = tiny(), tmp_path / "latency_table.json"
    table = latency.LatencyTable(IMAGES, str(path))
    estimate = table.latency(model)
    assert estimate > 0 and len(measured) == 1 and len(measured[0]) == 4
    assert table.latency(model) == estimate and len(measured) == 1  # nothing measured again
    cut = widths.rebuild(model, {"expanded_conv_expand": 24})
    table.latency(cut)
    assert len(measured[1]) == 1  # only the cut bneck has a new shape
    changes = widths.changes(model, {"expanded_conv_1_project": 16})
    assert changes == {"expanded_conv_1": {"filters": 16}}
    built = widths.rebuild(model, {"expanded_conv_1_project": 16}, transfer_weights=False)
    assert table.latency(model, changes) == table.latency(built)  # the same units, without building the model
    assert len(measured[2]) == 2  # the bneck's new output, and the top that reads it
    again = latency.LatencyTable(IMAGES, str(path))  # a resumed search reads the run folder's table
    assert again.latency(cut) == table.latency(cut) and len(measured) == 3
    assert latency.LatencyTable(IMAGES, str(path), threads=2).entries == {}  # measured at another thread count


def test_calibration_scales_the_sum_to_the_whole_models_measurement(tmp_path):
    model = tiny()
    table = latency.LatencyTable(IMAGES, str(tmp_path / "table.json"))
    measured, total = table.calibrate(model)
    assert measured > 0 and total > 0
    assert table.latency(model) == pytest.approx(measured)
    assert latency.LatencyTable(IMAGES, str(tmp_path / "table.json")).scale == pytest.approx(measured / total)


def test_recalibration_on_a_cut_model_anchors_its_estimate_to_the_start_times_the_measured_ratio(tmp_path):
    model = tiny()
    space = [s for s, v in widths.cuttable(model).items() if widths.describe(v) == "expanded_conv_1 expansion"][0]
    cut = widths.rebuild(model, {space: 16})
    table = latency.LatencyTable(IMAGES, str(tmp_path / "table.json"))
    with pytest.raises(ValueError, match="`start`"):
        table.calibrate(cut, start=model)
    start_ms, _ = table.calibrate(model)
    cut_ms, cut_total = table.calibrate(cut, start=model)
    assert table.latency(cut) == pytest.approx(cut_ms) and 0.2 * start_ms < cut_ms < 1.2 * start_ms
    saved = latency.LatencyTable(IMAGES, str(tmp_path / "table.json"))
    assert saved.start_ms == pytest.approx(start_ms) and saved.scale == pytest.approx(cut_ms / cut_total)
    saved.anchor(model, start_ms)  # a resume restores a scale without measuring
    assert saved.latency(model) == pytest.approx(start_ms) and saved.start_ms == pytest.approx(start_ms)


def test_a_model_that_is_not_a_chain_is_refused():
    inputs = keras.Input((8, 8, 4))
    a = keras.layers.Conv2D(4, 1, name="a")(inputs)
    b = keras.layers.Conv2D(4, 1, name="b")(inputs)
    with pytest.raises(ValueError, match="`model`.*'b'.*chain"):
        latency.links(keras.Model(inputs, keras.layers.Add(name="sum")([a, b])))
