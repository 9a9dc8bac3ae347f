"""``mbv3 adapt``: NetAdapt on a run's trained float model, into ``adapted.keras`` for the later steps.

The run folder's ``adapt/`` keeps the search: ``latency_table.json`` (the int8
unit latencies, calibrated on the starting model), ``search.json`` (the options
and the finished iterations) and ``current.keras`` (the model of the last
finished iteration), so that a killed search resumes from its last iteration.
At the target, the model is fine-tuned for ``finetune_epochs``, its BN
statistics recomputed, and saved as ``adapted.keras``; ``adapt.json``,
``adapt.md`` and ``adapt.png`` report the iterations and the widths.
"""

import dataclasses
import json
import os
import time

from keras_mbv3 import checks
from keras_mbv3.adapt import latency as latency_lib
from keras_mbv3.adapt import search, widths
from keras_mbv3.backend import keras
from keras_mbv3.batchnorm import precise_batchnorm
from keras_mbv3.files import write_atomically
from keras_mbv3.recipes import report as report_lib
from keras_mbv3.recipes import training
from keras_mbv3.recipes.settings import ADAPT_DEFAULTS

HOLDOUT_BATCHES = 8  # training batches, unaugmented, that score the proposals (the validation split stays unseen)
TUNE_BN_IMAGES = 1024  # precise BN statistics of a fine-tuned proposal
CALIBRATION_IMAGES = 16  # training images that calibrate the int8 units timed for the latency table


@dataclasses.dataclass(frozen=True)
class Options:
    target_ratio: float = None
    target_ms: float = None
    step_fraction: float = ADAPT_DEFAULTS["step_fraction"]
    proposal_steps: int = ADAPT_DEFAULTS["proposal_steps"]
    finetune_epochs: int = ADAPT_DEFAULTS["finetune_epochs"]
    threads: int = ADAPT_DEFAULTS["threads"]

    def check(self):
        if (self.target_ratio is None) == (self.target_ms is None):
            checks.fail("--target-ratio", self.target_ratio, "one of --target-ratio (e.g. 0.7) or --target-ms")
        if self.target_ratio is not None:
            checks.in_range("--target-ratio", self.target_ratio, 0, 1, True, True)
        if self.target_ms is not None:
            checks.positive_number("--target-ms", self.target_ms)
        checks.in_range("--step-fraction", self.step_fraction, 0, 0.5, True, False)
        for name in ("proposal_steps", "finetune_epochs", "threads"):
            checks.positive_int("--" + name.replace("_", "-"), getattr(self, name))
        return self


def adapt(run, rate, options):
    """Run NetAdapt on ``run``'s ``float.keras`` (a ``recipe.Run``) at the fine-tuning ``rate``; return the report."""
    options.check()
    s = run.settings
    if s["task"] != "classification":
        checks.fail("--task", s["task"], "classification (mbv3 adapt cuts classifiers; detection and segmentation "
                    "heads are not cut yet)")  # fmt: skip
    folder = run.path("adapt")
    start = time.time()
    os.makedirs(folder, exist_ok=True)
    state = _read_state(folder, options)
    data = run.data
    images = data.images(CALIBRATION_IMAGES)
    table = latency_lib.LatencyTable(images, os.path.join(folder, "latency_table.json"), options.threads)
    original = keras.models.load_model(run.paths["float"])
    if not state["calibrated"]:
        table.calibrate(original)
        state["calibrated"] = True
        _write_state(folder, state)
    start_ms = table.latency(original)
    target = options.target_ms if options.target_ms is not None else options.target_ratio * start_ms
    holdout = data.train_plain.take(HOLDOUT_BATCHES)

    # Eagerly: each proposal is a new model, and tracing its train step cost more than the steps
    # (Small at 32 px, 5 steps: 29.9 s traced, 5.6 s eager; evaluation 1.4 s against 2.6 s).
    def tune(model):
        keras.utils.set_random_seed(s["seed"])
        training.compile_for(model, s["task"], rate, options.proposal_steps, run_eagerly=True)
        model.fit(data.train.repeat(), steps_per_epoch=options.proposal_steps, epochs=1, verbose=0)
        precise_batchnorm(model, data.train, max_images=TUNE_BN_IMAGES)

    def score(model):
        training.compile_for(model, s["task"], rate, 1, run_eagerly=True)
        return float(model.evaluate(holdout, verbose=0, return_dict=True)["accuracy"])

    def save(model, iterations):
        training.save(model, os.path.join(folder, "current.keras"))
        state["iterations"] = [dataclasses.asdict(i) for i in iterations]
        _write_state(folder, state)

    resume = None
    if state["iterations"]:
        current = keras.models.load_model(os.path.join(folder, "current.keras"))
        resume = (current, [search.Iteration(**i) for i in state["iterations"]])
        run.log(f"[adapt] resuming after iteration {len(state['iterations'])}")
    run.log(f"[adapt] start {start_ms:.4f} ms (int8, {options.threads} thread(s)), target {target:.4f} ms")
    adapted, iterations = search.search(
        original,
        target,
        table.latency,
        tune,
        score,
        resume=resume,
        save=save,
        step_fraction=options.step_fraction,
        latency_at=lambda model, new_widths, setters: table.latency(model, widths.changes(model, new_widths, setters)),
        log=run.log,
    )
    # the search's holdout picked the cuts; a longer fine-tune at the target finishes the model
    keras.utils.set_random_seed(s["seed"])
    steps = options.finetune_epochs * -(-data.train_size // s["batch_size"])
    training.compile_for(adapted, s["task"], rate, steps)
    adapted.fit(data.train, validation_data=data.val, epochs=options.finetune_epochs, verbose=2)
    precise_batchnorm(adapted, data.train)
    training.save(adapted, run.paths["adapted"])
    run.log(f"[adapt] wrote {run.paths['adapted']}")
    measured = latency_lib.measure_models({"start": original, "adapted": adapted}, images, options.threads)
    report = {
        "options": dataclasses.asdict(options),
        "target_ms": target,
        "start": {"table_ms": start_ms, "measured_ms": measured["start"], "widths": widths.widths(original)},
        "adapted": {"table_ms": table.latency(adapted), "measured_ms": measured["adapted"],
                    "widths": widths.widths(adapted)},
        "iterations": state["iterations"] or [dataclasses.asdict(i) for i in iterations],
    }  # fmt: skip
    table_ratio = report["adapted"]["table_ms"] / start_ms
    measured_ratio = measured["adapted"] / measured["start"]
    report["table_error"] = table_ratio / measured_ratio - 1  # of the latency relative to the start, side by side
    report["seconds"] = round(time.time() - start, 1)
    write_atomically(json.dumps(report, indent=2).encode(), run.path("adapt.json"), overwrite=True)
    report_lib.write_adapt(report, run.out)
    run.log(f"[adapt] {adapted_summary(report)}; report: {run.path('adapt.json')}, adapt.md and adapt.png")
    return report


def adapted_summary(report):
    start, adapted = report["start"], report["adapted"]
    return (
        f"int8 latency {start['measured_ms']:.4f} -> {adapted['measured_ms']:.4f} ms measured "
        f"({adapted['measured_ms'] / start['measured_ms']:.2f}x), table error {report['table_error']:+.1%}"
    )


def _read_state(folder, options):
    path = os.path.join(folder, "search.json")
    if not os.path.exists(path):
        return {"options": dataclasses.asdict(options), "calibrated": False, "iterations": []}
    with open(path) as f:
        state = json.load(f)
    if state["options"] != dataclasses.asdict(options):
        clash = [f"--{k.replace('_', '-')}: {v!r} there, {getattr(options, k)!r} now"
                 for k, v in state["options"].items() if v != getattr(options, k)]  # fmt: skip
        raise FileExistsError(f"{folder!r} holds a search with other options ({', '.join(clash)}); leave the flags "
                              "as they were to resume it, or delete the folder to start again.")  # fmt: skip
    return state


def _write_state(folder, state):
    write_atomically(json.dumps(state, indent=2).encode(), os.path.join(folder, "search.json"), overwrite=True)
