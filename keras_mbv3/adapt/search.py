"""NetAdapt's search (Yang et al., 2018; MobileNetV3 Section 4.2): cut widths until a latency target is met.

Each iteration proposes, per cuttable width (an expansion, or the output of a
residual chain), the smallest cut in steps of ``divisor`` channels whose table
latency saves at least ``step_fraction`` of the current latency (or what is
left to the target, if less); fine-tunes each
proposal briefly from the current weights (channels of highest L1 norm kept);
and keeps the one of best accuracy change per latency saved, as the
MobileNetV3 paper does (NetAdapt's own rule kept the most accurate); of those
that lose no accuracy, the most accurate, then the one of best tie-break (the
recipe's: lower holdout loss), then the one that saves more.

The kept proposal is measured whole, beside the model it was cut from, until
its interval is within +/- a quarter of the step: at 0.17 ms a 5% step is 8.5
microseconds, about the spread of single figures, and a search that trusted
them (issue 25) chose models measured 0.1714, 0.1730 and 0.1795 ms in a row
and believed it had reached 0.1713. A cut measured slower than its model is
refused (the next best is measured); the search stops when the interval
reaches the target, or at a ``Limits``, keeping its fastest model within the
accuracy rule. Each kept cut narrows a width, so a search always ends.
"""

import dataclasses
import math
import time

from keras_mbv3 import checks
from keras_mbv3.adapt import channels
from keras_mbv3.adapt import widths as widths_lib
from keras_mbv3.adapt.latency import Measurement


@dataclasses.dataclass(frozen=True)
class Iteration:
    """One finished iteration: the kept proposal's cut and figures (``latency_ms``: ``latency`` of the kept model
    after ``calibrate``, i.e. measured; ``estimated_ms``: the table's estimate it was chosen by)."""

    index: int
    cut: str  # widths_lib.describe of the cut width
    space: str
    width_before: int
    width_after: int
    latency_ms: float
    score: float
    proposals: int
    estimated_ms: float = None  # the table's estimate when chosen, before ``measure`` measured it
    half_ms: float = 0.0  # the half-width of the measurement's 95% interval
    rejected: int = 0  # better-ranked cuts measured slower than the model before them, refused
    elapsed_s: float = None  # the search's time at the iteration's end (its resumes included)
    seconds: float = None  # the iteration's own time
    rounds: int = None  # the measurement's rounds (until its interval was within +/- a quarter step, or a cap)

    def table_error(self):
        """The table's estimate when chosen against the measurement (estimate / measured - 1), or None."""
        return None if self.estimated_ms is None else self.estimated_ms / self.latency_ms - 1


STOPS = {
    "target": "the measured latency reached the target (within its interval)",
    "max-iterations": "--max-iterations",
    "time-budget": "--time-budget (the next iteration would not end within it, or it ran out during one)",
    "no-cut": "no width could be cut to save an eighth of the step",
    "no-faster-cut": "every cut was measured slower than the model before it",
}


@dataclasses.dataclass(frozen=True)
class Limits:
    """When a search stops short of its target: after ``max_iterations``, or before an iteration that would end
    after ``time_budget_s`` (its time estimated by the iterations before; one that runs over is abandoned at its
    next proposal). It then keeps the fastest model whose holdout score is at most ``max_accuracy_drop`` under
    the start's (the start, if none is)."""

    max_iterations: int = None
    time_budget_s: float = None
    max_accuracy_drop: float = 0.01

    def check(self):
        if self.max_iterations is not None:
            checks.positive_int("max_iterations", self.max_iterations)
        if self.time_budget_s is not None:
            checks.positive_number("time_budget_s", self.time_budget_s)
        checks.in_range("max_accuracy_drop", self.max_accuracy_drop, 0, 1, False, False)
        return self


@dataclasses.dataclass(frozen=True)
class Result:
    """What ``search`` returns: the ``model`` kept (iteration ``kept``, 0-based, or None for the start), all the
    ``iterations`` and the ``stopped_by`` key of ``STOPS``."""

    model: object
    iterations: list
    stopped_by: str
    kept: int = None


@dataclasses.dataclass(frozen=True)
class _Proposal:
    space: str
    setters: list  # [(layer name, argument), ...]
    width: int
    model: object
    latency_ms: float
    score: float
    tie_break: float


def _ranked(value):
    """``(score, tie_break)`` from what ``score`` returned: a number, or ``(score, tie_break)``."""
    return (float(value[0]), float(value[1])) if isinstance(value, tuple) else (float(value), 0.0)


def built_latency(latency):
    """``latency_at(model, new_widths, setters)`` that builds the model at those widths and measures it with
    ``latency``."""
    return lambda model, new_widths, setters: latency(
        widths_lib.rebuild(model, new_widths, transfer_weights=False, setters=setters)
    )


def smallest_cut(model, space, latency_at, budget_ms, divisor, current_ms, found=None, setters=None):
    """The widest width of ``space`` under the current one, a multiple of ``divisor``, at which ``model``'s
    latency (``latency_at(model, {space: width}, setters)``) is at most ``budget_ms``; None when even
    ``divisor`` channels are not that fast. ``current_ms``: the model's latency; ``found`` and ``setters``:
    its ``channels.spaces`` and ``widths_lib.cuttable``, if already known (each flattens the model).

    Each width tried may be a new shape for the table to measure (an int8 conversion
    each), so the width is found from the current and the narrowest latencies by
    linear interpolation (convs cost in proportion to their channels), then
    narrowed by ``divisor`` until it meets the budget, usually at once.
    """
    found = found or channels.spaces(model)
    setters = setters or widths_lib.cuttable(model, found)
    current = found.sizes[space]
    allowed = [w for w in range(divisor, current, divisor) if not widths_lib.joins_a_residual(model, {space: w}, found)]
    if not allowed:
        return None
    narrowest = allowed[0]
    narrowest_ms = latency_at(model, {space: narrowest}, setters)
    if narrowest_ms > budget_ms:
        return None
    fraction = (budget_ms - narrowest_ms) / max(current_ms - narrowest_ms, 1e-12)
    guess = narrowest + (current - narrowest) * fraction
    candidates = [w for w in allowed if w <= guess] or [narrowest]
    for width in reversed(candidates):  # from the interpolated width down, usually the first meets the budget
        if width == narrowest or latency_at(model, {space: width}, setters) <= budget_ms:
            return width
    return narrowest


def baseline_score(model, finetune, score):
    """``model``'s score after the proposals' short fine-tune (of a copy): what the first proposals' scores are
    compared with, so that their changes are the cuts' alone."""
    copy = widths_lib.rebuild(model, {})
    finetune(copy)
    return _ranked(score(copy))[0]


def search(model, target_ms, latency, finetune, score, *, latency_at=None, step_fraction=0.02, divisor=8, resume=None,
           save=None, start_score=None, measure=None, anchor=None, start_half_ms=0.0, limits=Limits(), load=None,
           elapsed_s=0.0, clock=time.monotonic, log=print):  # fmt: skip
    """Adapt ``model`` until its measured latency is within ``target_ms``, or a limit stops it; return a ``Result``.

    Args:
        model: a trained functional model (``widths_lib.cuttable`` lists what may be cut).
        target_ms: the latency to reach, in the units of ``latency``.
        latency: ``latency(model) -> ms``, the table's estimate (a ``LatencyTable``'s ``latency``).
        latency_at: ``latency_at(model, {space: width}, setters) -> ms`` without building that model
            (``setters``: ``widths_lib.cuttable(model)``; default: ``built_latency(latency)``, which builds it).
        finetune: ``finetune(model)`` trains a proposal in place (a few steps).
        score: ``score(model) -> float``, higher better (accuracy on held-out images), or ``(score, tie_break)``:
            of proposals of equal score, the one of higher ``tie_break`` is kept (e.g. minus the loss, when the
            held-out images are all classified right: they cannot tell the cuts apart).
        step_fraction: each cut saves at least this fraction of the current latency (the last, what is left).
        divisor: widths stay multiples of it.
        resume: ``(model, iterations)`` of a search stopped after its last finished iteration.
        save: ``save(model, iterations)`` after each iteration (to resume from).
        start_score: ``baseline_score(model, finetune, score)``, if already known.
        measure: ``measure(candidate, before) -> Measurement`` of a proposal, timed beside the model it was cut
            from (``LatencyTable.measure``, precise to a quarter of the step); default: the table's estimate,
            exact. A proposal measured slower than ``before`` is refused, and the next best is measured.
        anchor: ``anchor(model, ms)`` re-anchors ``latency`` on each model kept (``LatencyTable.anchor``); a
            resumed search must be anchored on its model as it was before it is called.
        start_half_ms: the half-width of the start's measured interval (``latency(model)`` is its median).
        limits: ``Limits``: the iterations and time allowed, and the accuracy rule of a search stopped short.
        load: ``load(index) -> model or None`` of an iteration saved before a resume (``Limits`` may keep one;
            None: the last iteration is kept instead).
        elapsed_s: the time spent before the search (calibration, the start's score): the budget counts it.
        clock: seconds, for the budget (``time.monotonic``).
        log: called with one line per iteration, and once when the search stops.
    """
    checks.positive_number("target_ms", target_ms)
    checks.in_range("step_fraction", step_fraction, 0, 1, True, True)
    checks.positive_int("divisor", divisor)
    limits.check()
    latency_at = latency_at or built_latency(latency)
    measure = measure or (lambda candidate, before: Measurement(latency(candidate), vs_before=latency(candidate)
                                                                / latency(before)))  # fmt: skip
    start, iterations, models = model, [], {}
    current_ms, current_half = latency(model), start_half_ms
    if resume is not None and resume[1]:
        model, iterations = resume[0], list(resume[1])
        current_ms, current_half = iterations[-1].latency_ms, iterations[-1].half_ms
        elapsed_s = iterations[-1].elapsed_s or 0.0
    began = clock() - elapsed_s
    current_score = iterations[-1].score if iterations else start_score
    if current_score is None and current_ms - current_half > target_ms:
        current_score = start_score = baseline_score(model, finetune, score)
    if start_score is None and iterations:  # (a caller that resumes without it: the accuracy rule needs it)
        start_score = baseline_score(start, finetune, score)
    stopped_by = None
    while stopped_by is None:
        stopped_by = _limit_reached(current_ms - current_half, target_ms, iterations, limits, clock() - began)
        if stopped_by:
            break
        needed = min(step_fraction * current_ms, current_ms - target_ms)  # the last cut: what is left
        iteration_began = clock()
        found = channels.spaces(model)  # once per iteration: each reading flattens the model
        cuttable = widths_lib.cuttable(model, found)
        cuts = _cuts(model, latency_at, current_ms, needed, divisor, found, cuttable, log)
        if not cuts:
            if not iterations:
                least = needed / MIN_STEP_DIVISOR
                raise RuntimeError(f"NetAdapt stopped at {current_ms:.4f} ms, above the target {target_ms:.4f} ms: "
                                   f"no width can be cut by {divisor} channels or more and save {least:.4f} ms "
                                   f"({least / current_ms:.1%})")  # fmt: skip
            stopped_by = "no-cut"
            break
        proposals = []
        for space, width in cuts.items():
            if limits.time_budget_s is not None and clock() - began >= limits.time_budget_s:
                stopped_by = "time-budget"  # this iteration is abandoned
                break
            candidate = widths_lib.rebuild(model, {space: width}, setters=cuttable, found=found)
            finetune(candidate)
            ranked = _ranked(score(candidate))
            proposals.append(_Proposal(space, cuttable[space], width, candidate, latency(candidate), *ranked))
        if stopped_by:
            break

        def gain(proposal):
            """Score lost per ms saved; of proposals that lose nothing, the best score, then the best tie-break,
            then the larger saving (a gain per ms would favour the smaller of two equal gains)."""
            change, saved = proposal.score - current_score, current_ms - proposal.latency_ms
            return min(change, 0.0) / max(saved, 1e-9), change, proposal.tie_break, saved

        kept, measured, rejected = None, None, 0
        for proposal in sorted(proposals, key=gain, reverse=True):
            measured = measure(proposal.model, model)
            if measured.vs_before is None or measured.vs_before < 1:
                kept = proposal
                break
            rejected += 1
            log(f"[adapt] iteration {len(iterations) + 1}: {widths_lib.describe(proposal.setters)} "
                f"{found.sizes[proposal.space]} -> {proposal.width} measured {measured.ms:.4f} ms, "
                f"{measured.vs_before - 1:.1%} slower than the model before it: refused")  # fmt: skip
        if kept is None:
            stopped_by = "no-faster-cut"
            break
        model, current_score = kept.model, kept.score
        if anchor:
            anchor(model, measured.ms)
        current_ms, current_half = measured.ms, measured.half_ms
        iteration = Iteration(len(iterations), widths_lib.describe(kept.setters), kept.space, found.sizes[kept.space],
                              kept.width, current_ms, kept.score, len(proposals), kept.latency_ms, current_half,
                              rejected, round(clock() - began, 1), round(clock() - iteration_began, 1),
                              measured.rounds)  # fmt: skip
        iterations.append(iteration)
        models[iteration.index] = model
        if save:  # before the line: a search killed once it is printed resumes after this iteration
            save(model, iterations)
        log(progress_line(iteration, target_ms, step_fraction, iterations, limits))
    kept = _kept(stopped_by, iterations, start_score, limits)
    chosen = start if kept is None else model if kept == len(iterations) - 1 else models.get(kept)
    if chosen is None:
        chosen = load(kept) if load else None
    if chosen is None:  # an iteration before a resume, its model not kept (a search of an older version)
        log(f"[adapt] iteration {kept + 1}'s model is not kept: the last iteration's instead")
        kept, chosen = len(iterations) - 1, model
    result = Result(chosen, iterations, stopped_by, kept)
    log(stop_line(result, target_ms, start_score, limits))
    return result


MIN_STEP_DIVISOR = 8  # a step no cut can save is halved, down to an eighth of it


def _cuts(model, latency_at, current_ms, needed, divisor, found, cuttable, log):
    """``{space: width}``: the smallest cut of each width that saves ``needed`` ms (``smallest_cut``, from the
    table: nothing is fine-tuned yet). When no width can save that much (Small at 96 px: cutting any one
    expansion to 8 channels saved less than 10%), the step is halved, down to ``needed / MIN_STEP_DIVISOR``."""
    for halvings in range(int(math.log2(MIN_STEP_DIVISOR)) + 1):
        step = needed / 2**halvings
        if halvings:
            log(f"[adapt] no width can be cut to save {2 * step / current_ms:.1%}: the step is halved to "
                f"{step / current_ms:.1%} for this iteration")  # fmt: skip
        cuts = {space: smallest_cut(model, space, latency_at, current_ms - step, divisor, current_ms, found, cuttable)
                for space in cuttable}  # fmt: skip
        cuts = {space: width for space, width in cuts.items() if width is not None}
        if cuts:
            return cuts
    return {}


def _limit_reached(low_ms, target_ms, iterations, limits, elapsed):
    """The ``STOPS`` key that ends the search before its next iteration, or None."""
    if low_ms <= target_ms:
        return "target"
    if limits.max_iterations is not None and len(iterations) >= limits.max_iterations:
        return "max-iterations"
    if limits.time_budget_s is not None and elapsed + _iteration_seconds(iterations) > limits.time_budget_s:
        return "time-budget"
    return None


def _iteration_seconds(iterations):
    """The time an iteration takes: the mean of the last three (0 before the first: it is tried)."""
    timed = [i.seconds for i in iterations if i.seconds is not None][-3:]
    return sum(timed) / len(timed) if timed else 0.0


def _kept(stopped_by, iterations, start_score, limits):
    """The iteration kept: the last at the target; else the fastest within the accuracy rule (None: the start)."""
    if stopped_by == "target" or not iterations:
        return len(iterations) - 1 if iterations else None
    floor = -math.inf if start_score is None else start_score - limits.max_accuracy_drop - 1e-9  # float32 scores
    allowed = [i for i in iterations if i.score >= floor]
    return min(allowed, key=lambda i: i.latency_ms).index if allowed else None


def iterations_left(current_ms, target_ms, step_fraction):
    """The iterations still needed if each saves ``step_fraction`` of the latency (the last, what is left)."""
    if current_ms <= target_ms:
        return 0
    return math.ceil(math.log(target_ms / current_ms) / math.log(1 - step_fraction) - 1e-9)


def progress_line(iteration, target_ms, step_fraction, iterations, limits):
    """One line a person can read: the iteration, its cut, the measurement against the target, the table's
    estimate and its error, the holdout score, the time spent and an estimate of the time left."""
    error = "" if iteration.estimated_ms is None else f", table {iteration.estimated_ms:.4f} " \
                                                         f"({iteration.table_error():+.1%})"
    line = (f"[adapt] iteration {iteration.index + 1}: {iteration.cut} {iteration.width_before} -> "
            f"{iteration.width_after}; measured {iteration.latency_ms:.4f} +/- {iteration.half_ms:.4f} ms, target "
            f"{target_ms:.4f} ({iteration.latency_ms / target_ms:.2f}x){error}; holdout {iteration.score:.2%}, "
            f"{iteration.proposals} proposals")  # fmt: skip
    if iteration.elapsed_s is None:
        return line
    left = iterations_left(iteration.latency_ms - iteration.half_ms, target_ms, step_fraction)
    if limits.max_iterations is not None:
        left = min(left, limits.max_iterations - len(iterations))
    seconds = left * _iteration_seconds(iterations)
    if limits.time_budget_s is not None:
        seconds = min(seconds, max(limits.time_budget_s - iteration.elapsed_s, 0.0))
    return line + f"; {_minutes(iteration.elapsed_s)} spent, about {_minutes(seconds)} left ({left} iteration(s))"


def stop_line(result, target_ms, start_score, limits):
    """Why the search stopped, and the model it keeps."""
    if result.kept is None:
        kept = "keeps the start's widths" + (" (no iteration within --max-accuracy-drop of the start's holdout "
                                             "score)" if result.iterations else "")  # fmt: skip
    else:
        chosen = result.iterations[result.kept]
        kept = (f"keeps iteration {chosen.index + 1}: {chosen.latency_ms:.4f} +/- {chosen.half_ms:.4f} ms "
                f"({chosen.latency_ms / target_ms:.2f}x the target), holdout {chosen.score:.2%}")  # fmt: skip
        if start_score is not None and result.stopped_by != "target":
            kept += f" (the start's {start_score:.2%}, --max-accuracy-drop {limits.max_accuracy_drop})"
    return f"[adapt] stopped after {len(result.iterations)} iteration(s): {STOPS[result.stopped_by]}; {kept}"


def _minutes(seconds):
    return f"{seconds / 60:.1f} min"
