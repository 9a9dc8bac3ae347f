"""NetAdapt's search loop, with MAdds standing in for the latency table (deterministic, no timing)."""

import pytest

from keras_mbv3.adapt import search, widths
from keras_mbv3.backend import keras
from keras_mbv3.layers import InvertedResidual
from keras_mbv3.applications.complexity import count_madds


def madds_ms(model):
    return count_madds(model) / 1e6


def start_model():
    """Three bnecks between a stem and a dense top: the kinds of widths of a MobileNetV3, quick to rebuild."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="conv")(inputs)
    x = InvertedResidual(24, strides=2, expanded_filters=64, se_ratio=0.25, name="expanded_conv")(x)
    x = InvertedResidual(24, expanded_filters=72, name="expanded_conv_1")(x)
    x = InvertedResidual(40, strides=2, expanded_filters=96, name="expanded_conv_2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))


def test_each_iteration_saves_the_step_and_keeps_the_best_score_per_latency_saved():
    model = start_model()
    tuned = []

    def score(candidate):  # cutting an output width costs score, cutting an expansion costs none
        setters = widths.cuttable(candidate)
        return sum(w for s, w in widths.widths(candidate).items() if setters[s][0][1] != "expanded_filters") / 1e3

    start_ms = madds_ms(model)
    log = []
    adapted, iterations = search.search(model, 0.9 * start_ms, madds_ms, tuned.append, score, step_fraction=0.04,
                                        log=log.append)  # fmt: skip
    assert madds_ms(adapted) <= 0.9 * start_ms < madds_ms(model)
    assert len(iterations) == len(log) >= 2 and "iteration 1:" in log[0] and "ms (target" in log[0]
    previous = start_ms
    for iteration in iterations:
        assert previous - iteration.latency_ms >= min(0.04 * previous, previous - 0.9 * start_ms) - 1e-9  # the step
        assert iteration.width_after % 8 == 0 and iteration.width_after < iteration.width_before
        previous = iteration.latency_ms
    assert all(i.cut.endswith("expansion") for i in iterations)  # no score lost per ms saved: always best
    assert len(tuned) == 1 + sum(i.proposals for i in iterations)  # every proposal once, and a copy of the start
    assert tuned[0] is not model and widths.widths(tuned[0]) == widths.widths(model)


@pytest.mark.parametrize("proposals_score", [0.5, 0.6])  # as the start, above it
def test_the_start_is_scored_after_the_proposals_fine_tune_and_equal_scores_keep_the_larger_saving(proposals_score):
    model = start_model()
    scored = []

    def score(candidate):  # the start 0.5, every proposal alike: only the latency saved tells them apart
        scored.append(candidate)
        return 0.5 if len(scored) == 1 else proposals_score

    tuned = []
    start_ms = madds_ms(model)
    _, iterations = search.search(model, 0.97 * start_ms, madds_ms, tuned.append, score, step_fraction=0.02,
                                  log=lambda line: None)  # fmt: skip
    assert scored[0] is tuned[0] and scored[0] is not model  # the start's score is that of a fine-tuned copy
    found = widths.cuttable(model)
    savings = []
    for space in found:
        width = search.smallest_cut(model, space, search.built_latency(madds_ms), 0.98 * start_ms, 8, start_ms)
        if width is not None:
            savings.append(start_ms - madds_ms(widths.rebuild(model, {space: width}, transfer_weights=False)))
    assert len(savings) == iterations[0].proposals >= 2 and len(set(savings)) >= 2
    assert start_ms - iterations[0].latency_ms == pytest.approx(max(savings))

    def score_and_tie_break(candidate):  # equal scores; the tie-break prefers the slower model
        return 0.5, madds_ms(candidate)

    _, iterations = search.search(model, 0.97 * start_ms, madds_ms, lambda m: None, score_and_tie_break,
                                  step_fraction=0.02, log=lambda line: None)  # fmt: skip
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


def test_a_stopped_search_resumes_from_its_last_iteration():
    model = start_model()
    saved = []
    target = 0.7 * madds_ms(model)

    def channels_kept(candidate):
        return sum(widths.widths(candidate).values()) / 1e3

    options = dict(step_fraction=0.02, log=lambda line: None)
    full, full_iterations = search.search(model, target, madds_ms, lambda m: None, channels_kept,
                                          save=lambda m, i: saved.append((m, list(i))), **options)  # fmt: skip
    assert len(saved) == len(full_iterations) >= 2
    resumed, iterations = search.search(model, target, madds_ms, lambda m: None, channels_kept, resume=saved[0],
                                        **options)  # fmt: skip
    assert iterations == full_iterations and widths.widths(resumed) == widths.widths(full)


def test_a_target_no_cut_can_reach_is_a_clear_error():
    with pytest.raises(RuntimeError, match="above the target"):
        search.search(start_model(), 1e-6, madds_ms, lambda m: None, madds_ms, step_fraction=0.5, log=lambda line: None)


@pytest.mark.parametrize("arguments, name", [(dict(target_ms=0), "target_ms"), (dict(step_fraction=1.5),
                                                                                 "step_fraction")])  # fmt: skip
def test_bad_search_arguments_name_themselves(arguments, name):
    options = {"target_ms": 1.0, **arguments}
    with pytest.raises(ValueError, match=name):
        search.search(start_model(), options.pop("target_ms"), madds_ms, lambda m: None, madds_ms, **options)


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
