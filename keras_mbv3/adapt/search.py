"""NetAdapt's search (Yang et al., 2018; MobileNetV3 Section 4.2): cut widths until a latency target is met.

Each iteration proposes, per cuttable width (an expansion, or the output of a
residual chain), the smallest cut in steps of ``divisor`` channels whose table
latency saves at least ``step_fraction`` of the current latency; fine-tunes each
proposal briefly from the current weights (channels of highest L1 norm kept);
and keeps the one of best accuracy change per latency saved, as the
MobileNetV3 paper does (NetAdapt's own rule kept the most accurate).
"""

import dataclasses

from keras_mbv3 import checks
from keras_mbv3.adapt import widths as widths_lib


@dataclasses.dataclass(frozen=True)
class Iteration:
    """One finished iteration: the kept proposal's cut and figures (the table's latency, in ms)."""

    index: int
    cut: str  # widths_lib.describe of the cut width
    space: str
    width_before: int
    width_after: int
    latency_ms: float
    score: float
    proposals: int


def smallest_cut(model, space, latency, budget_ms, divisor):
    """The widest width of ``space`` under the current one, a multiple of ``divisor``, at which ``model``'s
    latency is at most ``budget_ms``; None when even ``divisor`` channels are not that fast."""

    def saves_enough(width):
        return latency(widths_lib.rebuild(model, {space: width}, transfer_weights=False)) <= budget_ms

    low, high = 1, (widths_lib.widths(model)[space] - 1) // divisor  # widths low * divisor .. high * divisor
    if high < low or not saves_enough(low * divisor):
        return None
    while low < high:  # latency falls with the width: the widest that saves enough, by bisection
        middle = (low + high + 1) // 2
        low, high = (middle, high) if saves_enough(middle * divisor) else (low, middle - 1)
    return low * divisor


def search(model, target_ms, latency, finetune, score, *, step_fraction=0.02, divisor=8, resume=None, save=None,
           log=print):  # fmt: skip
    """Adapt ``model`` until ``latency(model) <= target_ms``; return ``(model, [Iteration, ...])``.

    Args:
        model: a trained functional model (``widths_lib.cuttable`` lists what may be cut).
        target_ms: the latency to reach, in the units of ``latency``.
        latency: ``latency(model) -> ms`` (a ``LatencyTable``'s ``latency``).
        finetune: ``finetune(model)`` trains a proposal in place (a few steps).
        score: ``score(model) -> float``, higher better (accuracy on held-out images).
        step_fraction: each cut saves at least this fraction of the current latency.
        divisor: widths stay multiples of it.
        resume: ``(model, iterations)`` of a search stopped after its last finished iteration.
        save: ``save(model, iterations)`` after each iteration (to resume from).
        log: called with one line per iteration.
    """
    checks.positive_number("target_ms", target_ms)
    checks.in_range("step_fraction", step_fraction, 0, 1, True, True)
    checks.positive_int("divisor", divisor)
    iterations = []
    if resume is not None:
        model, iterations = resume
    current_ms, current_score = latency(model), None
    while current_ms > target_ms:
        if current_score is None:
            current_score = score(model)
        needed = step_fraction * current_ms
        before = widths_lib.widths(model)
        proposals = []
        for space, setters in widths_lib.cuttable(model).items():
            width = smallest_cut(model, space, latency, current_ms - needed, divisor)
            if width is None:
                continue
            candidate = widths_lib.rebuild(model, {space: width})
            finetune(candidate)
            proposals.append((space, setters, width, candidate, latency(candidate), score(candidate)))
        if not proposals:
            raise RuntimeError(f"NetAdapt stopped at {current_ms:.4f} ms, above the target {target_ms:.4f} ms: no "
                               f"width can be cut by {divisor} channels or more and save {step_fraction:.0%}")  # fmt: skip

        def gain(proposal):
            return (proposal[5] - current_score) / max(current_ms - proposal[4], 1e-9)

        space, setters, width, model, new_ms, new_score = max(proposals, key=gain)
        iteration = Iteration(len(iterations), widths_lib.describe(setters), space, before[space], width, new_ms,
                              new_score, len(proposals))  # fmt: skip
        iterations.append(iteration)
        current_ms, current_score = new_ms, new_score
        log(
            f"[adapt] iteration {iteration.index + 1}: {iteration.cut} {iteration.width_before} -> {width}, "
            f"{new_ms:.4f} ms (target {target_ms:.4f}), score {new_score:.4f}, {len(proposals)} proposals"
        )
        if save:
            save(model, iterations)
    return model, iterations
