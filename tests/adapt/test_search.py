"""NetAdapt's search loop, with MAdds standing in for the latency table (deterministic, no timing)."""

import dataclasses

import pytest

from keras_mbv3.adapt import latency, search, widths
from keras_mbv3.backend import IS_KERAS_3, keras
from keras_mbv3.layers import InvertedResidual
from keras_mbv3.applications.complexity import count_madds


# The loop is the same Python on both Keras lines; what differs per line (rebuilding, slicing, flattening) runs on
# both in test_widths.py and in the first search test here. The other searches run on Keras 3 only: on tf_keras they
# took 544 s of its line (models rebuild about 3x slower there; measured when the searches also built a model per
# width tried, before madds_at).
same_on_both_lines = pytest.mark.skipif(not IS_KERAS_3, reason="the search loop is line-independent; tf_keras runs "
                                        "the first search test and test_widths.py")  # fmt: skip
slow = pytest.mark.slow  # whole searches: each rebuilds tens of models


_UNIT_MADDS = {}  # latency.key(unit): MAdds in millions


def madds_ms(model, changes=None):
    """MAdds in millions standing in for the latency table: the sum over the table's own units of ``model`` (with
    ``changes``, ``{layer name: {argument: value}}``, as ``LatencyTable.latency`` takes them), each unit key's MAdds
    computed once.

    As the adapt step's table, it prices a width without building the model at that width: the searches here
    built one model per width tried (``search.built_latency``), 31 of the 43 s of the no-cut test on Keras 3.
    """
    total = 0.0
    for unit in latency.units(latency.links(model, changes)):
        key = latency.key(unit)
        if key not in _UNIT_MADDS:
            _UNIT_MADDS[key] = count_madds(latency.unit_model(unit)) / 1e6
        total += _UNIT_MADDS[key]
    return total


def madds_at(model, new_widths, setters):
    """``latency_at`` of the searches: ``madds_ms`` of ``model`` at ``new_widths``, not built (as the adapt step's)."""
    return madds_ms(model, widths.changes(model, new_widths, setters))


def adapt(model, target_ms, latency_of, finetune, score, **options):
    """``search.search`` pricing the widths it tries with ``madds_at`` unless told otherwise."""
    return search.search(model, target_ms, latency_of, finetune, score, **{"latency_at": madds_at, **options})


def untimed(iterations):
    """``iterations`` without their times (``elapsed_s``, ``seconds``), which differ from one run to the next."""
    return [dataclasses.replace(i, elapsed_s=None, seconds=None) for i in iterations]


def start_model():
    """Three bnecks between a stem and a dense top: the kinds of widths of a MobileNetV3, quick to rebuild."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="conv")(inputs)
    x = InvertedResidual(24, strides=2, expanded_filters=64, se_ratio=0.25, name="expanded_conv")(x)
    x = InvertedResidual(24, expanded_filters=72, name="expanded_conv_1")(x)
    x = InvertedResidual(40, strides=2, expanded_filters=96, name="expanded_conv_2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))


def test_the_tables_unit_madds_are_the_models_madds_at_any_widths():
    """What makes ``madds_ms`` a stand-in for the table: its units sum to the whole model's MAdds, at the start's
    widths and at widths priced without building the model."""
    model = start_model()
    setters, found = widths.cuttable(model), widths.widths(model)
    new_widths = {space: width - 8 for space, width in found.items()}  # every kind: expansions, outputs, the stem
    cut = widths.rebuild(model, new_widths, transfer_weights=False)
    assert madds_ms(model) == pytest.approx(count_madds(model) / 1e6)
    assert madds_at(model, new_widths, setters) == pytest.approx(count_madds(cut) / 1e6)
    assert count_madds(cut) < count_madds(model)


def test_the_default_latency_at_builds_each_width_and_finds_the_same_iteration():
    """``search.search`` without ``latency_at`` prices each width on a model built at it (``built_latency``): its
    first iteration is the one ``madds_at`` finds without building."""
    model, limits = start_model(), search.Limits(max_iterations=1)
    options = dict(step_fraction=0.04, limits=limits, log=lambda line: None)
    built = search.search(model, 0.9 * madds_ms(model), madds_ms, lambda m: None, lambda m: 0.5, **options)
    priced = adapt(model, 0.9 * madds_ms(model), madds_ms, lambda m: None, lambda m: 0.5, **options)
    assert len(built.iterations) == 1 and untimed(built.iterations) == untimed(priced.iterations)


@slow
def test_each_iteration_saves_the_step_and_keeps_the_best_score_per_latency_saved():
    model = start_model()
    tuned = []

    def score(candidate):  # cutting an output width costs score, cutting an expansion costs none
        setters = widths.cuttable(candidate)
        return sum(w for s, w in widths.widths(candidate).items() if setters[s][0][1] != "expanded_filters") / 1e3

    start_ms = madds_ms(model)
    log = []
    result = adapt(model, 0.9 * start_ms, madds_ms, tuned.append, score, step_fraction=0.04, log=log.append)
    adapted, iterations = result.model, result.iterations
    assert madds_ms(adapted) <= 0.9 * start_ms < madds_ms(model)
    assert result.stopped_by == "target" and result.kept == len(iterations) - 1
    assert len(iterations) == len(log) - 1 >= 2 and "iteration 1:" in log[0] and "target" in log[0]
    assert log[-1].startswith(f"[adapt] stopped after {len(iterations)} iteration(s): the measured latency reached")
    previous = start_ms
    for iteration in iterations:
        assert previous - iteration.latency_ms >= min(0.04 * previous, previous - 0.9 * start_ms) - 1e-9  # the step
        assert iteration.width_after % 8 == 0 and iteration.width_after < iteration.width_before
        previous = iteration.latency_ms
    assert all(i.cut.endswith("expansion") for i in iterations)  # no score lost per ms saved: always best
    assert len(tuned) == 1 + sum(i.proposals for i in iterations)  # every proposal once, and a copy of the start
    assert tuned[0] is not model and widths.widths(tuned[0]) == widths.widths(model)


@slow
@same_on_both_lines
@pytest.mark.parametrize("proposals_score", [0.5, 0.6])  # as the start, above it
def test_the_start_is_scored_after_the_proposals_fine_tune_and_equal_scores_keep_the_larger_saving(proposals_score):
    model = start_model()
    scored = []

    def score(candidate):  # the start 0.5, every proposal alike: only the latency saved tells them apart
        scored.append(candidate)
        return 0.5 if len(scored) == 1 else proposals_score

    tuned = []
    start_ms = madds_ms(model)
    iterations = adapt(model, 0.97 * start_ms, madds_ms, tuned.append, score, step_fraction=0.02,
                       log=lambda line: None).iterations  # fmt: skip
    assert scored[0] is tuned[0] and scored[0] is not model  # the start's score is that of a fine-tuned copy
    found = widths.cuttable(model)
    savings = []
    for space in found:
        width = search.smallest_cut(model, space, madds_at, 0.98 * start_ms, 8, start_ms)
        if width is not None:
            savings.append(start_ms - madds_at(model, {space: width}, found))
    assert len(savings) == iterations[0].proposals >= 2 and len(set(savings)) >= 2
    assert start_ms - iterations[0].latency_ms == pytest.approx(max(savings))

    def score_and_tie_break(candidate):  # equal scores; the tie-break prefers the slower model
        return 0.5, madds_ms(candidate)

    iterations = adapt(model, 0.97 * start_ms, madds_ms, lambda m: None, score_and_tie_break,
                       step_fraction=0.02, log=lambda line: None).iterations  # fmt: skip
    assert start_ms - iterations[0].latency_ms == pytest.approx(min(savings)) and iterations[0].score == 0.5


def test_the_smallest_cut_is_the_widest_width_that_saves_enough():
    model = start_model()
    space = [s for s, v in widths.cuttable(model).items() if widths.describe(v) == "expanded_conv_1 expansion"][0]
    needed = 0.01 * madds_ms(model)
    width = search.smallest_cut(
        model, space, search.built_latency(madds_ms), madds_ms(model) - needed, 8, madds_ms(model)
    )
    cut = lambda w: madds_ms(model) - madds_ms(widths.rebuild(model, {space: w}, transfer_weights=False))  # noqa: E731
    assert width % 8 == 0 and cut(width) >= needed
    assert width + 8 >= widths.widths(model)[space] or cut(width + 8) < needed  # MAdds are linear: the widest


@slow
@same_on_both_lines
def test_a_stopped_search_resumes_from_its_last_iteration():
    model = start_model()
    saved = []
    target = 0.7 * madds_ms(model)

    def channels_kept(candidate):
        return sum(widths.widths(candidate).values()) / 1e3

    options = dict(step_fraction=0.02, log=lambda line: None)
    full = adapt(model, target, madds_ms, lambda m: None, channels_kept,
                 save=lambda m, i: saved.append((m, list(i))), **options)  # fmt: skip
    assert len(saved) == len(full.iterations) >= 2
    resumed = adapt(model, target, madds_ms, lambda m: None, channels_kept, resume=saved[0], **options)
    assert untimed(resumed.iterations) == untimed(full.iterations)
    assert widths.widths(resumed.model) == widths.widths(full.model)


@slow
@same_on_both_lines
def test_a_target_no_cut_can_reach_ends_where_the_widths_end_and_a_model_with_nothing_to_cut_is_a_clear_error():
    lines = []
    result = adapt(start_model(), 1e-6, madds_ms, lambda m: None, lambda m: 0.5, step_fraction=0.5,
                   log=lines.append)  # fmt: skip
    assert result.stopped_by == "no-cut" and len(result.iterations) >= 3 and "the step is halved to" in "".join(lines)
    assert result.kept == len(result.iterations) - 1  # the fastest; no score lost
    scored = adapt(start_model(), 1e-6, madds_ms, lambda m: None, madds_ms, step_fraction=0.5,
                   log=lines.append)  # fmt: skip
    assert scored.kept is None and "keeps the start's widths (no iteration within" in lines[-1]  # MAdds as score
    with pytest.raises(RuntimeError, match="above the target"):
        adapt(start_model(), 1e-6, madds_ms, lambda m: None, madds_ms, divisor=128, log=lambda line: None)


@pytest.mark.parametrize("arguments, name", [(dict(target_ms=0), "target_ms"), (dict(step_fraction=1.5),
                                                                                 "step_fraction")])  # fmt: skip
def test_bad_search_arguments_name_themselves(arguments, name):
    options = {"target_ms": 1.0, **arguments}
    with pytest.raises(ValueError, match=name):
        adapt(start_model(), options.pop("target_ms"), madds_ms, lambda m: None, madds_ms, **options)


def test_the_smallest_cut_skips_a_width_that_would_join_a_residual():
    inputs = keras.Input((16, 16, 8))
    x = keras.layers.Conv2D(16, 1, name="conv")(inputs)
    x = InvertedResidual(24, expanded_filters=32, name="block")(x)  # 16 -> 24 at stride 1: no residual
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(x))
    space = [s for s, v in widths.cuttable(model).items() if widths.describe(v) == "block output"][0]
    current = madds_ms(model)
    assert search.smallest_cut(model, space, search.built_latency(madds_ms), current - 1e-9, 8, current) == 8
    assert search.smallest_cut(model, space, search.built_latency(madds_ms), current, 8, current) != 16


class FakeClock:
    """Seconds that pass only when a proposal is fine-tuned: ``tick`` each."""

    def __init__(self, tick):
        self.now, self.tick = 0.0, tick

    def __call__(self):
        return self.now

    def finetune(self, model):
        self.now += self.tick


def noisy_measure(seed, spread):
    """``measure(candidate, before)``: MAdds with a relative noise of up to ``spread`` per reading, as a busy CPU
    gives, each reading of the two models drawn anew."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def measure(candidate, before):
        ms, before_ms = (madds_ms(m) * (1 + rng.uniform(-spread, spread)) for m in (candidate, before))
        return search.Measurement(ms, spread * ms / 2, 15, ms / before_ms)

    return measure


@slow
@same_on_both_lines
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_noisy_table_and_noisy_measurements_end_and_never_keep_a_cut_measured_slower(seed):
    """The table under-estimates each saving by half and measurements move by up to 6%, on steps of 2%: the
    search still ends (each kept cut narrows a width), and each kept cut was measured faster than its start."""
    model = start_model()
    start_ms = madds_ms(model)
    table = lambda m: 0.5 * madds_ms(m) + 0.5 * start_ms  # noqa: E731  (half of each saving)
    measure, lines = noisy_measure(seed, 0.06), []
    table_at = lambda m, new_widths, setters: 0.5 * madds_at(m, new_widths, setters) + 0.5 * start_ms  # noqa: E731
    result = adapt(model, 0.8 * start_ms, table, lambda m: None, lambda m: 0.5, step_fraction=0.02,
                   latency_at=table_at, measure=measure, log=lines.append)  # fmt: skip
    assert result.stopped_by in search.STOPS and lines[-1].startswith("[adapt] stopped after")
    kept = [line for line in lines if "refused" not in line][:-1]
    assert len(kept) == len(result.iterations) and all(i.rejected >= 0 for i in result.iterations)
    sizes = [sum(widths.widths(model).values())]
    for iteration in result.iterations:
        sizes.append(sizes[-1] - (iteration.width_before - iteration.width_after))
    assert all(a > b for a, b in zip(sizes, sizes[1:]))  # each kept cut narrowed the model: no loop
    refused = [line for line in lines if "refused" in line]
    assert sum(i.rejected for i in result.iterations) <= len(refused)
    assert all("slower than the model before it" in line for line in refused)


@slow
@same_on_both_lines
def test_a_cut_measured_slower_than_the_model_before_is_refused_and_the_next_best_is_measured():
    model = start_model()
    start_ms, measured = madds_ms(model), []

    def measure(candidate, before):  # the best-ranked cut of the first iteration measures 3% slower
        measured.append(candidate)
        slower = len(measured) == 1
        return search.Measurement(madds_ms(candidate), 0.0, 15, 1.03 if slower else 0.97)

    lines = []
    result = adapt(model, 0.97 * start_ms, madds_ms, lambda m: None, lambda m: 0.5, step_fraction=0.02,
                   measure=measure, log=lines.append)  # fmt: skip
    first = result.iterations[0]
    assert first.rejected == 1 and "3.0% slower than the model before it: refused" in lines[0]
    assert widths.widths(result.model) != widths.widths(measured[0]) or len(result.iterations) > 1


@slow
@same_on_both_lines
def test_all_cuts_measured_slower_stop_the_search_at_the_model_before():
    model = start_model()
    start_ms = madds_ms(model)

    def measure(candidate, before):
        faster = madds_ms(candidate) > 0.96 * start_ms  # the first iteration's cuts only
        return search.Measurement(madds_ms(candidate), 0.0, 15, 0.98 if faster else 1.01)

    result = adapt(model, 0.5 * start_ms, madds_ms, lambda m: None, lambda m: 0.5, step_fraction=0.03,
                   measure=measure, log=lambda line: None)  # fmt: skip
    assert result.stopped_by == "no-faster-cut" and len(result.iterations) == 1 and result.kept == 0
    assert madds_ms(result.model) == pytest.approx(result.iterations[0].latency_ms)


@slow
@same_on_both_lines
def test_a_measurement_whose_interval_reaches_the_target_stops_the_search():
    model = start_model()
    target = 0.9 * madds_ms(model)

    def measured(half):  # every cut measures 2% above the target, with an interval of +/- half x the target
        return lambda candidate, before: search.Measurement(max(madds_ms(candidate), 1.02 * target), half * target,
                                                            15, 0.9)  # fmt: skip

    result = adapt(model, target, madds_ms, lambda m: None, lambda m: 0.5, step_fraction=0.02,
                   measure=measured(0.03), log=lambda line: None)  # fmt: skip
    assert result.stopped_by == "target" and len(result.iterations) == 1
    assert result.iterations[0].latency_ms == pytest.approx(1.02 * target)
    narrow = adapt(model, target, madds_ms, lambda m: None, lambda m: 0.5, step_fraction=0.02,
                   measure=measured(0.01), limits=search.Limits(max_iterations=3), log=lambda line: None)
    assert narrow.stopped_by == "max-iterations"  # never measured within the target: it went on
    start_ms = madds_ms(model)
    start_within = adapt(model, 0.97 * start_ms, madds_ms, lambda m: None, lambda m: 0.5,
                         start_half_ms=0.04 * start_ms, log=lambda line: None)  # fmt: skip
    assert start_within.stopped_by == "target" and start_within.iterations == [] and start_within.kept is None


@slow
@same_on_both_lines
def test_the_time_budget_stops_before_an_iteration_that_would_overrun_and_keeps_the_best_within_the_accuracy_rule():
    """Fine-tuning a proposal takes 10 fake seconds. The holdout score falls by 1.5 points per iteration after the
    second; with a 2-point rule the search keeps the fastest model within it, not the last."""
    model = start_model()
    start_ms = madds_ms(model)
    clock, lines = FakeClock(10.0), []
    count = lambda m: sum(widths.widths(m).values())  # noqa: E731
    start_count = count(model)

    def score(candidate):  # the start and cuts of up to 16 channels: 0.9; then 1.5 points per 8 channels more
        return 0.9 - 0.015 * max(0, (start_count - count(candidate)) // 8 - 2)

    # the start's score 10 s; iterations of 6, 5, 5 and 4 proposals end at 70, 120, 170 and 210 s; the 5th
    # (about 47 s, as the last three) would end after 230 s
    limits = search.Limits(time_budget_s=230.0, max_accuracy_drop=0.02)
    result = adapt(model, 0.3 * start_ms, madds_ms, clock.finetune, score, step_fraction=0.02, clock=clock,
                   limits=limits, log=lines.append)  # fmt: skip
    assert result.stopped_by == "time-budget" and [i.proposals for i in result.iterations] == [6, 5, 5, 4]
    assert [i.elapsed_s for i in result.iterations] == [70.0, 120.0, 170.0, 210.0]
    assert [round(i.score, 3) for i in result.iterations] == [0.9, 0.9, 0.885, 0.87]  # the 4th is 3 points under
    assert result.kept == 2 and madds_ms(result.model) == pytest.approx(result.iterations[2].latency_ms)
    assert "spent, about" in lines[0] and " left (" in lines[0]
    assert "--time-budget" in lines[-1] and f"keeps iteration {result.kept + 1}:" in lines[-1]


@slow
@same_on_both_lines
def test_max_iterations_stops_the_search_and_a_resume_may_raise_it():
    model = start_model()
    start_ms = madds_ms(model)
    saved, models = [], {}

    def save(m, iterations):
        saved.append(list(iterations))
        models[len(iterations) - 1] = m

    options = dict(step_fraction=0.02, log=lambda line: None)
    first = adapt(model, 0.3 * start_ms, madds_ms, lambda m: None, lambda m: 0.5, save=save,
                  limits=search.Limits(max_iterations=2), **options)  # fmt: skip
    assert first.stopped_by == "max-iterations" and len(first.iterations) == 2 and first.kept == 1
    more = adapt(model, 0.3 * start_ms, madds_ms, lambda m: None, lambda m: 0.5, load=models.get,
                 resume=(first.model, first.iterations), limits=search.Limits(max_iterations=4),
                 **options)  # fmt: skip
    assert more.stopped_by == "max-iterations" and more.iterations[:2] == first.iterations and len(more.iterations) == 4


def test_the_progress_line_estimates_the_time_left_from_the_step_and_the_iterations_time():
    iteration = search.Iteration(1, "block expansion", "s", 64, 56, 0.9, 0.95, 5, 0.92, 0.004, 0, 120.0, 60.0, 40)
    first = dataclasses.replace(iteration, index=0, seconds=60.0, elapsed_s=60.0)
    line = search.progress_line(iteration, 0.7, 0.05, [first, iteration], search.Limits())
    assert search.iterations_left(0.9 - 0.004, 0.7, 0.05) == 5  # 0.896 * 0.95^5 = 0.693
    assert "iteration 2: block expansion 64 -> 56; measured 0.9000 +/- 0.0040 ms, target 0.7000 (1.29x)" in line
    assert "table 0.9200 (+2.2%)" in line and "2.0 min spent, about 5.0 min left (5 iteration(s))" in line
    budgeted = search.progress_line(iteration, 0.7, 0.05, [first, iteration], search.Limits(time_budget_s=300))
    assert "about 3.0 min left" in budgeted


@pytest.mark.parametrize("limits, name", [(search.Limits(max_iterations=0), "max_iterations"),
                                          (search.Limits(time_budget_s=-1.0), "time_budget_s"),
                                          (search.Limits(max_accuracy_drop=2.0), "max_accuracy_drop")])  # fmt: skip
def test_bad_limits_name_themselves(limits, name):
    with pytest.raises(ValueError, match=name):
        limits.check()
