"""``mbv3 adapt``: NetAdapt on a run's trained float model, into ``adapted.keras`` for the later steps.

The run folder's ``adapt/`` keeps the search: ``latency_table.json`` (the int8
unit latencies, the start's measured latency, and the scale re-anchored on the
last chosen model), ``search.json`` (the options, the starting model's SHA-256,
its score and interval, the finished iterations and, once decided, why the
search stopped and the iteration it kept) and ``current_N.keras`` (the model
after iteration N; all are kept until the end, when a search stopped short may
keep an earlier one), so that a killed search resumes from its last finished
iteration, and a kill in the final fine-tune does not search again. Proposals
are fine-tuned on the training split less a holdout of training images, and
scored on that holdout (the validation split stays unseen). The kept model is
fine-tuned on the whole training split for ``finetune_epochs`` by the recipe's
own fit (``training.train``: its BN statistics recomputed, ``finetune_history.csv``,
and a killed fine-tune resumed from its last epoch); ``adapt.json``, ``adapt.md``
and ``adapt.png`` report the iterations and the widths, and ``adapted.keras`` is
written last.
"""

import dataclasses
import json
import os
import shutil
import time

from keras_mbv3 import checks
from keras_mbv3.adapt import latency as latency_lib
from keras_mbv3.adapt import search, widths
from keras_mbv3.backend import keras
from keras_mbv3.batchnorm import precise_batchnorm
from keras_mbv3.files import sha256, write_atomically
from keras_mbv3.recipes import report as report_lib
from keras_mbv3.recipes import training
from keras_mbv3.recipes.settings import ADAPT_DEFAULTS

HOLDOUT_IMAGES = 1024  # at most, and a fifth of the training split at most: they score the proposals
TUNE_BN_IMAGES = 256  # precise BN statistics of a fine-tuned proposal (1024 cost 6.7 s of its ~17 s at 32 px)
EAGER_BELOW_STEPS = 10  # proposals fine-tuned fewer steps run them eagerly
CALIBRATION_IMAGES = 16  # training images that calibrate the int8 units timed for the latency table
FINETUNE_LOG = "finetune"  # adapt/finetune_history.csv, adapt/finetune_backup while it runs


@dataclasses.dataclass(frozen=True)
class Options:
    target_ratio: float = None
    target_ms: float = None
    step_fraction: float = ADAPT_DEFAULTS["step_fraction"]
    proposal_steps: int = ADAPT_DEFAULTS["proposal_steps"]
    finetune_epochs: int = ADAPT_DEFAULTS["finetune_epochs"]
    threads: int = ADAPT_DEFAULTS["threads"]
    max_iterations: int = ADAPT_DEFAULTS["max_iterations"]
    time_budget: float = ADAPT_DEFAULTS["time_budget"]  # minutes
    max_accuracy_drop: float = ADAPT_DEFAULTS["max_accuracy_drop"]

    def limits(self):
        return search.Limits(self.max_iterations, None if self.time_budget is None else 60.0 * self.time_budget,
                             self.max_accuracy_drop)  # fmt: skip

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
        if self.max_iterations is not None:
            checks.positive_int("--max-iterations", self.max_iterations)
        if self.time_budget is not None:
            checks.positive_number("--time-budget", self.time_budget)
        checks.in_range("--max-accuracy-drop", self.max_accuracy_drop, 0, 1, False, False)
        return self


LIMITS = ("max_iterations", "time_budget", "max_accuracy_drop")  # a killed search may resume with other limits


def check_task(task):
    """Refuse a ``task`` (the ``--task`` value) that NetAdapt cannot cut, before any data are read."""
    if task != "classification":
        checks.fail("--task", task, "classification (mbv3 adapt cuts classifiers; detection and segmentation heads "
                    "are not cut yet)")  # fmt: skip


def adapt(source, out, target, data, tuning, plan, options, log=print):
    """NetAdapt of the trained float model ``source`` into ``target``; return the report.

    Args:
        source: the float model's file (a run's ``float.keras``).
        out: the run folder: ``adapt/`` keeps the search, ``adapt.json``, ``adapt.md`` and
            ``adapt.png`` report it.
        target: the adapted model's file, written last (a run's ``adapted.keras``).
        data: the run's data set (``data.Data``): calibration images of the latency table,
            the final fine-tune and the validation accuracies.
        tuning: ``tuning(holdout=N)``, the same data set with N training images held
            out, its batches repeatable: the proposals' fine-tune and their score.
        plan: the final fine-tune (``training.Fit``, ``options.finetune_epochs`` epochs); the
            proposals take its task, rate and seed.
        options: ``Options``.

    The caller refuses first a task that cannot be cut (``check_task``).
    """
    if data.train_size < 5:
        checks.fail("--data", data.name, "at least 5 training images (a fifth is held out to score the cuts)")
    return _Adaptation(source, out, target, data, tuning, plan, options.check(), log).run()


class _Adaptation:
    """One ``mbv3 adapt``: its state in ``RUN_DIR/adapt/``, the proposals' fine-tune and score, the final model."""

    def __init__(self, source, out, target, data, tuning, plan, options, log):
        self.source, self.out, self.target, self.data, self.plan = source, out, target, data, plan
        self.options, self.log, self.distribution = options, log, training.strategy("default")
        self.folder = os.path.join(out, "adapt")
        os.makedirs(self.folder, exist_ok=True)
        self.state = _read_state(self.folder, options, sha256(source))
        self.held = min(HOLDOUT_IMAGES, data.train_size // 5)
        keras.utils.set_random_seed(plan.seed)  # the tuning batches are drawn alike in a fresh and a resumed search
        self.tuning = tuning(holdout=self.held)
        self.table = latency_lib.LatencyTable(data.images(CALIBRATION_IMAGES),
                                              os.path.join(self.folder, "latency_table.json"), options.threads)  # fmt: skip

    def run(self):
        start, state, table = time.time(), self.state, self.table
        original = keras.models.load_model(self.source, compile=False)
        options, precision = self.options, self.options.step_fraction / 4  # intervals within +/- a quarter of the step
        if not state["calibrated"] or table.start_ms is None:  # (a table file of an older version: no start_ms)
            state["start_half_ms"] = table.calibrate(original, precision).half_ms
            state["calibrated"] = True
            self._write_state()
        start_ms = table.start_ms  # measured once: the reference of --target-ratio, on a resume too
        target = options.target_ms if options.target_ms is not None else options.target_ratio * start_ms
        limits = [f"--max-iterations {options.max_iterations}"] if options.max_iterations else []
        limits += [f"--time-budget {options.time_budget:g} min"] if options.time_budget else []
        self.log(f"[adapt] start {start_ms:.4f} +/- {state.get('start_half_ms', 0.0):.4f} ms (int8, {options.threads} "
                f"thread(s), 95% interval), target {target:.4f} ms, stops there"
                + (f" or at {' or '.join(limits)}" if limits else "")
                + f"; proposals scored on {self.held} training images held out of their fine-tuning")  # fmt: skip
        resume = self._resume()
        if resume is None:  # the scale of the start (a search killed in its first iteration may have moved it)
            table.anchor(original, start_ms)
        else:  # the scale of the model resumed from, as measured when it was chosen
            table.anchor(resume[0], resume[1][-1].latency_ms)
        if state["start_score"] is None and start_ms > target:
            state["start_score"] = search.baseline_score(original, self.tune, self.score)
            state["setup_s"] = round(time.time() - start, 1)
            self._write_state()
        result = self._stopped(original, resume) or search.search(
            original,
            target,
            table.latency,
            self.tune,
            self.score,
            resume=resume,
            save=self.save,
            start_score=state["start_score"],
            measure=lambda candidate, before: table.measure(candidate, original, before, precision),
            anchor=table.anchor,
            start_half_ms=state.get("start_half_ms", 0.0),
            limits=options.limits(),
            load=self._load,
            elapsed_s=state.get("setup_s", 0.0),
            step_fraction=options.step_fraction,
            latency_at=self.latency_at,
            log=self.log,
        )
        self._record_stop(result)
        adapted = result.model if result.kept is not None else widths.rebuild(original, {})  # a copy to fine-tune
        adapted, log_dir = self._finetune(adapted)
        report = self._report(original, adapted, result, start_ms, target)
        report["seconds"] = round(time.time() - start, 1)
        write_atomically(json.dumps(report, indent=2).encode(), os.path.join(self.out, "adapt.json"), overwrite=True)
        report_lib.write_adapt(report, self.out)
        training.save(adapted, self.target)  # last: once it exists, the step is done
        training.release(self.distribution, self.folder, FINETUNE_LOG, log_dir)
        kept = [] if result.kept is None else [_model_file(result.kept)]
        _remove_models(self.folder, keep=[self.state["model"], *kept])
        self.log(f"[adapt] wrote {self.target}")
        self.log(f"[adapt] {adapted_summary(report)}; report: {os.path.join(self.out, 'adapt.json')}, adapt.md and "
                 "adapt.png")  # fmt: skip
        return report

    def latency_at(self, model, new_widths, setters):
        """The table's latency of ``model`` at ``new_widths``, without building that model."""
        return self.table.latency(model, widths.changes(model, new_widths, setters))

    # Each proposal is a new model, whose train step is traced anew: for a few steps, eager
    # steps cost less (Small at 32 px, 5 steps: 29.9 s traced, 5.6 s eager), for more, the
    # traced ones (96 px, 20 steps: eager 41 s, traced 20 s at a constant rate). Evaluation
    # is eager (1.4 s against 2.6 s traced at 32 px).
    def tune(self, model):
        """The proposals' short fine-tune: ``proposal_steps`` on the tuning batches, then precise BN."""
        steps = self.options.proposal_steps
        keras.utils.set_random_seed(self.plan.seed)
        training.compile_for(model, self.plan.task, self.plan.rate, None, run_eagerly=steps < EAGER_BELOW_STEPS)
        # each proposal's traced graph released after its fit: it would otherwise live to the end of the search
        training.fit_traced_once(model, self.tuning.train.repeat(), steps_per_epoch=steps, epochs=1, verbose=0)
        precise_batchnorm(model, self.tuning.train, max_images=TUNE_BN_IMAGES)

    def score(self, model):
        """``(accuracy, -loss)`` on the holdout: of equal accuracies, the lower loss is kept (Small on digits at
        96 px classified all 287 holdout images right in every proposal of the first iterations)."""
        training.compile_for(model, self.plan.task, self.plan.rate, None, run_eagerly=True)
        result = model.evaluate(self.tuning.holdout, verbose=0, return_dict=True)
        return float(result["accuracy"]), -float(result["loss"])

    def save(self, model, iterations):
        """The model first, then the state that names it: a search killed between the two resumes before it.
        Each iteration's model is kept until the end: a search stopped short keeps the best of them."""
        self.state["model"] = _model_file(len(iterations) - 1)
        training.save(model, os.path.join(self.folder, self.state["model"]))
        self.state["iterations"] = [dataclasses.asdict(i) for i in iterations]
        self._write_state()

    def _load(self, index):
        """Iteration ``index``'s model (0-based), saved by ``save``; None if not kept (an older version's)."""
        path = os.path.join(self.folder, _model_file(index))
        return keras.models.load_model(path, compile=False) if os.path.exists(path) else None

    def _limits(self):
        return {name: getattr(self.options, name) for name in LIMITS}

    def _stopped(self, original, resume):
        """The ``search.Result`` of a search that stopped under the same limits (killed in the final fine-tune,
        or its adapted.keras deleted), or None."""
        stopped, iterations = self.state.get("stopped"), [] if resume is None else resume[1]
        if not stopped or stopped["limits"] != self._limits() or stopped["iterations"] != len(iterations):
            return None
        kept = stopped["kept"]
        model = original if kept is None else resume[0] if kept == len(iterations) - 1 else self._load(kept)
        if model is None:
            return None
        self.log(f"[adapt] the search stopped before: {search.STOPS[stopped['by']]}")
        return search.Result(model, iterations, stopped["by"], kept)

    def _record_stop(self, result):
        """Write the search's decision, so that a kill in the final fine-tune resumes there, not in the search.
        A fine-tune begun on another model (killed, then resumed with other limits that kept other widths) starts
        over: its backup would not fit the model, and its log would mix two models. Other limits that keep the
        same model (``kept``: an iteration's saved model, or the start) keep its fine-tune."""
        stopped = {"by": result.stopped_by, "kept": result.kept, "iterations": len(result.iterations),
                   "limits": self._limits()}  # fmt: skip
        before = self.state.get("stopped")
        if before == stopped:
            return
        if before is None or before["kept"] != result.kept:
            self._forget_finetune()
        self.state["stopped"] = stopped
        self._write_state()

    def _forget_finetune(self):
        shutil.rmtree(os.path.join(self.folder, f"{FINETUNE_LOG}_backup"), ignore_errors=True)
        log = os.path.join(self.folder, f"{FINETUNE_LOG}_history.csv")
        if os.path.exists(log):
            os.remove(log)

    def _resume(self):
        """``(model, iterations)`` of the last finished iteration, or None."""
        kept = [_model_file(i) for i in range(len(self.state["iterations"]))]
        _remove_models(self.folder, keep=kept)  # those a killed search left after its last finished iteration
        if not self.state["iterations"]:
            return None
        self.log(f"[adapt] resuming after iteration {len(self.state['iterations'])}")
        current = keras.models.load_model(os.path.join(self.folder, self.state["model"]), compile=False)
        return current, [search.Iteration(**i) for i in self.state["iterations"]]

    def _finetune(self, adapted):
        """The holdout picked the cuts; a longer fine-tune on the whole training split finishes the model (the
        recipe's fit: resumable in ``adapt/``, its log ``adapt/finetune_history.csv``). Returns it and its log folder."""
        model, log_dir, _ = training.train(self.plan, lambda steps: adapted, self.data, self.folder, FINETUNE_LOG,
                                           self.distribution, precise_bn=True)  # fmt: skip
        return model, log_dir

    def _report(self, original, adapted, result, start_ms, target):
        data = self.data
        adapted_accuracy = float(adapted.evaluate(data.val, verbose=0, return_dict=True)["accuracy"])  # as fitted
        beside = self.table.beside_start(adapted, original)  # the start's int8 file converted once, by the table
        measured = {"start": beside["start"], "adapted": beside["model"]}
        iterations = result.iterations
        report = {
            "options": dataclasses.asdict(self.options),
            "target_ms": target,
            "holdout_images": self.held,
            "stopped_by": result.stopped_by,
            "stop": search.STOPS[result.stopped_by],
            "kept_iteration": None if result.kept is None else result.kept + 1,
            "start": {"table_ms": start_ms, "half_ms": self.state.get("start_half_ms", 0.0),
                      "measured_ms": measured["start"], "widths": widths.widths(original),
                      "holdout_score": self.state["start_score"],
                      "val_accuracy": _val_accuracy(original, data, self.plan)},
            "adapted": {"table_ms": self.table.latency(adapted), "measured_ms": measured["adapted"],
                        "widths": widths.widths(adapted), "val_accuracy": adapted_accuracy},
            "iterations": [dataclasses.asdict(i) for i in iterations],
        }  # fmt: skip
        report["measured_ratio"] = measured["adapted"] / measured["start"]  # side by side, after the search
        # the table's estimate of each chosen model against its measurement (relative to the start, side by side)
        errors = [i.table_error() for i in iterations if i.estimated_ms is not None]
        report["table_errors"] = errors
        report["table_error"] = max(errors, key=abs) if errors else 0.0
        return report

    def _write_state(self):
        _write_state(self.folder, self.state)


def _val_accuracy(model, data, plan):
    training.compile_for(model, plan.task, 1e-3, None, run_eagerly=True)  # for its metrics: nothing is trained
    return float(model.evaluate(data.val, verbose=0, return_dict=True)["accuracy"])


AGAIN = "delete adapted.keras, adapt.json and the adapt/ folder to adapt again"


def refuse_other_options(out, options):
    """Refuse to reuse ``out``'s ``adapted.keras`` for ``options`` other than those it was adapted with (or
    unknown: no ``adapt.json``, which is written before it)."""
    path = os.path.join(out, "adapt.json")
    if not os.path.exists(path):
        raise FileExistsError(f"{out!r} holds an adapted.keras without its adapt.json (options unknown); {AGAIN}")
    with open(path) as f:
        clash = _clashes(json.load(f)["options"], options)
    if clash:
        raise FileExistsError(f"{out!r} holds an adapted.keras adapted with other options ({', '.join(clash)}); "
                              f"{AGAIN}, or leave the flags as they were")  # fmt: skip


def _model_file(index):
    """The file of iteration ``index``'s model (0-based) in ``adapt/``."""
    return f"current_{index + 1}.keras"


def _remove_models(folder, keep):
    for name in os.listdir(folder):
        if name.startswith("current_") and name.endswith(".keras") and name not in keep:
            os.remove(os.path.join(folder, name))


def adapted_summary(report):
    start, adapted = report["start"], report["adapted"]
    return (
        f"int8 latency {start['measured_ms']:.4f} -> {adapted['measured_ms']:.4f} ms measured "
        f"({report['measured_ratio']:.2f}x); the table's largest error on a chosen model {report['table_error']:+.1%}"
    )


def _clashes(saved, options):
    return [f"--{k.replace('_', '-')}: {v!r} there, {getattr(options, k)!r} now" for k, v in saved.items()
            if v != getattr(options, k)]  # fmt: skip


def _read_state(folder, options, source_sha256):
    path = os.path.join(folder, "search.json")
    if not os.path.exists(path):
        return {"options": dataclasses.asdict(options), "float_sha256": source_sha256, "calibrated": False,
                "start_score": None, "model": None, "iterations": []}  # fmt: skip
    with open(path) as f:
        state = json.load(f)
    if state.get("float_sha256") != source_sha256:
        started = f"SHA-256 {state['float_sha256'][:12]}..." if state.get("float_sha256") else "not recorded"
        raise FileExistsError(f"{folder!r} holds a search that started from another float.keras ({started}; now "
                              f"{source_sha256[:12]}...: trained again since); delete the folder to adapt the new "
                              "one")  # fmt: skip
    clash = _clashes({k: v for k, v in state["options"].items() if k not in LIMITS}, options)
    state["options"] = dataclasses.asdict(options)  # the limits as given now
    if clash:
        raise FileExistsError(f"{folder!r} holds a search with other options ({', '.join(clash)}); leave the flags "
                              "as they were to resume it, or delete the folder to start again.")  # fmt: skip
    return state


def _write_state(folder, state):
    write_atomically(json.dumps(state, indent=2).encode(), os.path.join(folder, "search.json"), overwrite=True)
