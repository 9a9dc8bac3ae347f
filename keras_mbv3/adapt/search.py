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
"""

import dataclasses

from keras_mbv3 import checks
from keras_mbv3.adapt import channels
from keras_mbv3.adapt import widths as widths_lib


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
    estimated_ms: float = None  # the table's estimate when chosen, before ``calibrate`` measured it


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
           save=None, start_score=None, calibrate=None, log=print):  # fmt: skip
    """Adapt ``model`` until ``latency(model) <= target_ms``; return ``(model, [Iteration, ...])``.

    Args:
        model: a trained functional model (``widths_lib.cuttable`` lists what may be cut).
        target_ms: the latency to reach, in the units of ``latency``.
        latency: ``latency(model) -> ms`` (a ``LatencyTable``'s ``latency``).
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
        calibrate: ``calibrate(model)`` re-anchors ``latency`` on the model each iteration keeps by measuring it
            (``LatencyTable.calibrate(model, start)``); a resumed search must be anchored on its model as it was
            (``LatencyTable.anchor(model, iterations[-1].latency_ms)``) before it is called.
        log: called with one line per iteration.
    """
    checks.positive_number("target_ms", target_ms)
    checks.in_range("step_fraction", step_fraction, 0, 1, True, True)
    checks.positive_int("divisor", divisor)
    latency_at = latency_at or built_latency(latency)
    iterations = []
    if resume is not None:
        model, iterations = resume
    current_ms = latency(model)
    if iterations:
        current_score = iterations[-1].score
    elif current_ms > target_ms:
        current_score = start_score if start_score is not None else baseline_score(model, finetune, score)
    while current_ms > target_ms:
        needed = min(step_fraction * current_ms, current_ms - target_ms)  # the last cut: what is left
        found = channels.spaces(model)  # once per iteration: each reading flattens the model
        cuttable = widths_lib.cuttable(model, found)
        proposals = []
        for space, setters in cuttable.items():
            width = smallest_cut(model, space, latency_at, current_ms - needed, divisor, current_ms, found, cuttable)
            if width is None:
                continue
            candidate = widths_lib.rebuild(model, {space: width}, setters=cuttable)
            finetune(candidate)
            ranked = _ranked(score(candidate))
            proposals.append(_Proposal(space, setters, width, candidate, latency(candidate), *ranked))
        if not proposals:
            raise RuntimeError(f"NetAdapt stopped at {current_ms:.4f} ms, above the target {target_ms:.4f} ms: no "
                               f"width can be cut by {divisor} channels or more and save {needed:.4f} ms "
                               f"({needed / current_ms:.1%})")  # fmt: skip

        def gain(proposal):
            """Score lost per ms saved; of proposals that lose nothing, the best score, then the best tie-break,
            then the larger saving (a gain per ms would favour the smaller of two equal gains)."""
            change, saved = proposal.score - current_score, current_ms - proposal.latency_ms
            return min(change, 0.0) / max(saved, 1e-9), change, proposal.tie_break, saved

        kept = max(proposals, key=gain)
        model, current_score = kept.model, kept.score
        if calibrate:
            calibrate(model)
        current_ms = latency(model)
        iteration = Iteration(len(iterations), widths_lib.describe(kept.setters), kept.space, found.sizes[kept.space],
                              kept.width, current_ms, kept.score, len(proposals), kept.latency_ms)  # fmt: skip
        iterations.append(iteration)
        if save:  # before the line: a search killed once it is printed resumes after this iteration
            save(model, iterations)
        log(
            f"[adapt] iteration {iteration.index + 1}: {iteration.cut} {iteration.width_before} -> {kept.width}, "
            f"{current_ms:.4f} ms (target {target_ms:.4f}), score {current_score:.4f}, {len(proposals)} proposals"
        )
    return model, iterations
