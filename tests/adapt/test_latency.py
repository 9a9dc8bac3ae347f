"""NetAdapt's latency table: units, caching in the run folder, calibration (LiteRT int8 at 1 thread, tiny units)."""

import math

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


@pytest.mark.slow
def test_calibration_scales_the_sum_to_the_whole_models_measurement(tmp_path):
    model = tiny()
    table = latency.LatencyTable(IMAGES, str(tmp_path / "table.json"))
    measured = table.calibrate(model)
    assert measured.ms > 0 and measured.rounds == 15 and 0 < measured.half_ms < measured.ms
    assert table.latency(model) == pytest.approx(measured.ms) and table.start_ms == measured.ms
    total = sum(table.unit_latencies(model))
    assert latency.LatencyTable(IMAGES, str(tmp_path / "table.json")).scale == pytest.approx(measured.ms / total)


@pytest.mark.slow
def test_a_cut_model_is_measured_beside_the_start_and_the_model_before_to_a_quarter_of_the_step(tmp_path):
    """The hard case of issue 25: a model of a few microseconds, whose single figures move by more than a 5%
    step. Rounds go on until the ratio's 95% interval is within 1.25% (a quarter of the step)."""
    model = tiny()
    space = [s for s, v in widths.cuttable(model).items() if widths.describe(v) == "expanded_conv_1 expansion"][0]
    before = widths.rebuild(model, {space: 48})
    cut = widths.rebuild(before, {space: 16})
    table = latency.LatencyTable(IMAGES, str(tmp_path / "table.json"))
    with pytest.raises(ValueError, match="`start`"):
        table.measure(cut, model)
    start = table.calibrate(model)
    measured = table.measure(cut, model, before, precision=0.0125)
    assert measured.rounds >= 15 and measured.half_ms <= 0.0125 * measured.ms  # reached, under the cap of rounds
    assert 0.2 * start.ms < measured.ms < 1.2 * start.ms and measured.vs_before < 1  # 16 of 48 expansion channels
    table.anchor(cut, measured.ms)
    assert table.latency(cut) == pytest.approx(measured.ms)
    saved = latency.LatencyTable(IMAGES, str(tmp_path / "table.json"))
    assert saved.start_ms == pytest.approx(start.ms) and saved.latency(cut) == pytest.approx(measured.ms)
    saved.anchor(model, start.ms)  # a resume restores a scale without measuring
    assert saved.latency(model) == pytest.approx(start.ms) and saved.start_ms == pytest.approx(start.ms)
    quick = table.measure(cut, model, model)  # no precision: the first rounds only; cut from the start
    assert quick.rounds == 15 and quick.vs_before == pytest.approx(quick.ms / start.ms)
    assert table.measure(cut, model, rounds=7).vs_before is None  # nothing it was cut from


def test_the_median_interval_is_the_binomial_order_statistics_and_covers_the_median_95_percent_of_the_time():
    assert latency.median_interval(range(1, 16)) == (4, 12)  # 96.5%; the 5th and 11th would be 88%
    assert latency.median_interval([3, 1, 2, 5, 4]) == (-math.inf, math.inf)  # 5 values: at most 94%
    assert latency.median_interval(range(6)) == (0, 5)  # 6 values: min and max, 97%
    rng = np.random.default_rng(0)
    draws = rng.lognormal(0.0, 0.3, (4000, 15))  # skewed, as latencies are; the median is exp(0) = 1
    covered = np.mean([low <= 1.0 <= high for low, high in map(latency.median_interval, draws)])
    assert 0.95 <= covered <= 0.98  # 0.965 in theory; 4,000 draws put it within +/- 0.006


def test_a_model_that_is_not_a_chain_is_refused():
    inputs = keras.Input((8, 8, 4))
    a = keras.layers.Conv2D(4, 1, name="a")(inputs)
    b = keras.layers.Conv2D(4, 1, name="b")(inputs)
    with pytest.raises(ValueError, match="`model`.*'b'.*chain"):
        latency.links(keras.Model(inputs, keras.layers.Add(name="sum")([a, b])))
