"""A run folder and its steps: train, qat, export, eval, bench; ``run`` chains them into the recipe.

Each step leaves its result in the run folder and is skipped when that result
is already there, so a rerun with the same ``--out`` resumes where it stopped
and a finished run is reused, not recomputed. ``settings.json`` records the
settings that define the results; a step with other settings is refused rather
than mixing two runs in one folder.
"""

import dataclasses
import functools
import json
import numbers
import os
import platform
import time

from keras_mbv3 import __version__, checks
from keras_mbv3.applications import sizes
from keras_mbv3.backend import FLAVOUR, IS_KERAS_3, keras
from keras_mbv3.files import sha256, write_atomically
from keras_mbv3.quantization import (
    ImageModelMetadata,
    KeepXnnpackLimits,
    export_tflite,
    quantize_model,
    quantize_scope,
)
from keras_mbv3.quantization.calibration import CALIBRATION_SAMPLES, REPRESENTATIVE_SAMPLES
from keras_mbv3.recipes import adapt_step
from keras_mbv3.recipes import data as data_lib
from keras_mbv3.recipes import evaluation, report, tasks, training
from keras_mbv3.recipes.settings import DEFAULTS, EMBEDDED, TASK_DEFAULTS, flag

# recorded for later steps, never a clash: the same data sets may move; a run goes on from one Keras 3 backend to
# another (its .keras files load on every backend)
MAY_MOVE = ("data_dir", "backend")
FLOAT_RATE = 2e-3
# Adam's steps do not scale with the weights, and the int8 form divides the
# kernels that read a hard-swish by 6 (36 after an SE gate): QAT at a tenth of
# the float rate dropped digits from 98.3% to 85.8% in one epoch; a hundredth kept 98.1%.
QAT_RATE = FLOAT_RATE / 100
# tfmot's QAT models do not reload from .keras (their quantize_layer variables); ours do.
# int8.tflite's I/O: MediaPipe Tasks refuse int8 I/O; they take float32 or uint8 pixels and uint8 scores.
# float32 pixels (0-255, normalization metadata mean 0, std 1): its QUANTIZE runs inside XNNPACK, and
# MediaPipe's ImageClassifier ran it 0.90x (Small) and 0.97x (Large) the time of uint8 pixels at 224,
# whose uint8-to-int8 QUANTIZE is a builtin op outside XNNPACK (benchmarks/int8_latency.py).
SHIPPED_INPUT, SHIPPED_OUTPUT = "float32", "uint8"
FILES = dict(float="float.keras", adapted="adapted.keras", qat="qat.keras" if IS_KERAS_3 else "qat.h5",
             float_tflite="float.tflite", int8_tflite="int8.tflite", int8_ptq_tflite="int8_ptq.tflite")  # fmt: skip
INT8_KINDS = ("int8", "int8_ptq")  # QAT's int8.tflite, post-training int8_ptq.tflite (mbv3 export --ptq)
ADAPT_RATE = FLOAT_RATE / 10  # NetAdapt's fine-tunes start from trained weights


@dataclasses.dataclass(frozen=True)
class Step:
    """A step's contract with its run folder.

    ``needs``: the folder's files it starts from, ``(FILES key, the command that makes it)``;
    a missing one is refused, naming that command. ``records``: the settings it runs with;
    a given flag that contradicts the folder's is refused before the step does anything
    (``Run.begin``), and the steps that make results (train, import, qat, eval) write them
    into ``settings.json`` (train and qat just before they fit). A step that records the
    task records its ``Task.OPTIONS`` too (detection's ``min_stride``).
    """

    needs: tuple = ()
    records: tuple = ()


DATA_SETTINGS = ("data", "task", "image_size", "batch_size", "seed")
TRAINED = ("float", "train")
STEPS = {
    "train": Step(records=("data", "task", "model", "alpha", "image_size", "batch_size", "seed", "epochs", "weights",
                           "keras", "backend", "data_dir")),  # fmt: skip
    "import": Step(records=(*DATA_SETTINGS, "keras", "backend", "data_dir")),
    "adapt": Step(needs=(TRAINED,), records=(*DATA_SETTINGS, "data_dir")),  # its own options: adapt.json
    "qat": Step(needs=(TRAINED,), records=(*DATA_SETTINGS, "qat_epochs", "keras", "backend", "data_dir")),
    "export": Step(needs=(TRAINED, ("qat", "qat"))),
    "export --ptq": Step(needs=(TRAINED,)),
    "eval": Step(records=(*DATA_SETTINGS, "data_dir")),
}


def check_settings(settings):
    """Validate the settings a step uses (flag names in the messages)."""
    s = settings
    checks.one_of("--task", s["task"], tasks.NAMES)
    checks.one_of("--model", s["model"], tuple(training.MODELS))
    if not isinstance(s["alpha"], numbers.Real) or not 0 < s["alpha"] <= 4:
        checks.fail("--alpha", s["alpha"], "a number in (0, 4], e.g. 0.75 or 1.0")
    sizes.CLASSIFICATION.check_side("--image-size", s["image_size"])  # any model; a builder's own rule: at train
    for name in ("batch_size", "epochs", "qat_epochs"):
        if s[name] is not None:  # epochs None: the length rule, once the data are known (train)
            checks.positive_int(flag(name), s[name])
    # another task's option refused, naming its flag; the task's own checked (e.g. --min-stride 16 or 8)
    tasks.get(s["task"], **{name: s[name] for name in tasks.option_names() if s[name] is not None})


def check_weights(weights):
    """Only where they are used (``train``): a later step must not fail on a weights file moved since."""
    if weights not in (None, "imagenet") and not os.path.isfile(weights):
        checks.fail("--weights", weights, "'imagenet' or an existing weights file")


def _absolute(settings):
    """Paths as absolute paths, so that a later step run from another folder finds them."""
    for name in ("data", "weights", "data_dir"):
        value = settings.get(name)
        if value and value not in ("imagenet", *EMBEDDED.values()) and not value.startswith("tfds:"):
            settings[name] = os.path.abspath(os.path.expanduser(value))
    return settings


class Run:
    """The run folder ``out`` and its steps; its settings are those given, else the folder's, else ``DEFAULTS``."""

    def __init__(self, out, log=print, distribution=None, **settings):
        unknown = set(settings) - set(DEFAULTS)
        if unknown:
            raise TypeError(f"unknown settings {sorted(unknown)}; allowed: {sorted(DEFAULTS)}")
        self.out, self.log = out, log
        self.given = _absolute({k: v for k, v in settings.items() if v is not None})
        if "weights" in self.given:
            check_weights(self.given["weights"])
        self.stored = self._read_settings()
        self.settings = {**DEFAULTS, **{k: v for k, v in self.stored.items() if k in DEFAULTS}, **self.given}
        self.settings["keras"] = FLAVOUR  # a run's Keras files load only on the Keras line that wrote them
        self.settings["backend"] = training.backend_name()  # the last step's
        checks.one_of("--task", self.settings["task"], tasks.NAMES)
        for name, default in TASK_DEFAULTS[self.settings["task"]].items():
            if self.settings[name] is None:
                self.settings[name] = default
        for name in set(tasks.option_names()) - set(self.task.OPTIONS) - set(self.given):
            self.settings[name] = None  # the folder's option of another task: --task then clashes, not the option
        check_settings(self.settings)
        self.distribution = distribution or training.strategy("default")
        self.chief = training.is_chief(self.distribution)
        self.paths = {k: os.path.join(out, v) for k, v in FILES.items()} if out is not None else {}
        self._data = None

    def path(self, name):
        return os.path.join(self.out, name)

    @property
    def task(self):
        """The run's ``tasks.Task``, with its options from the settings (detection's ``min_stride``); one left to
        the data is None until ``data`` loads (``data.task`` has it chosen)."""
        return tasks.get(self.settings["task"], **tasks.options_of(self.settings["task"], self.settings))

    def records(self, step):
        """The settings ``step`` (a ``Step``) records: its ``records``, and the task's options where it records the task."""
        return (*step.records, *(self.task.OPTIONS if "task" in step.records else ()))

    def _read_settings(self):
        if self.out is None or not os.path.exists(self.path("settings.json")):
            return {}
        try:
            stored = json.load(open(self.path("settings.json")))
        except ValueError as error:
            stored = error
        if not isinstance(stored, dict):
            checks.fail("--out", self.out, f"a run folder whose settings.json holds a JSON object ({stored})")
        stored.setdefault("keras", "tf_keras")  # folders of mbv3 before 0.2 ran on tf_keras
        if stored.get("task") in tasks.NAMES:  # folders from before a task option: the layout they were made with
            for name, before in tasks.get(stored["task"]).OPTIONS.items():
                stored.setdefault(name, before)
        return stored

    def record_settings(self, keys, write=True):
        """Add ``keys`` of the settings to ``settings.json`` (if ``write``); refuse a flag that contradicts the folder.

        A setting not given comes from the folder, so only a flag given with
        another value (or another Keras line) can clash.
        """
        left = {"epochs", *tasks.option_names()}  # a setting the data have not chosen yet (None) is not recorded
        mine = {k: self.settings[k] for k in keys if self.settings[k] is not None or k not in left}
        clash = {k: (self.stored[k], v) for k, v in mine.items()
                 if k in self.stored and self.stored[k] != v and k not in MAY_MOVE}  # fmt: skip
        if clash:
            old, new = clash.pop("keras", (None, None))
            parts = [f"{flag(k)}: {there!r} there, {now!r} now" for k, (there, now) in clash.items()]
            hints = ["leave the flag out to continue that run"] if clash else []
            if old:
                parts.append(f"Keras line: {old!r} there, {new!r} now")
                hints.append(f"set TF_USE_LEGACY_KERAS={int(old == 'tf_keras')} to continue that run")
            raise FileExistsError(f"{self.out!r} holds a run with other settings ({', '.join(parts)}); "
                                  + ", ".join(hints) + ", or use another --out for a new one.")  # fmt: skip
        if write and self.chief and any(self.stored.get(k, ...) != v for k, v in mine.items()):
            self._store(mine)

    def _store(self, values):
        """Write ``values`` into ``settings.json`` beside what it holds."""
        os.makedirs(self.out, exist_ok=True)
        self.stored = {**self.stored, **values}
        write_atomically(json.dumps(self.stored, indent=2).encode(), self.path("settings.json"), overwrite=True)

    @property
    def data(self):
        if self._data is None:
            s = self.settings
            self._data = self.task.load(s["data"], s["image_size"], s["batch_size"], s["data_dir"], s["seed"],
                                        log=lambda why: self.log(f"[data] {why}"))  # fmt: skip
            s.update(self._data.task.options)  # those left to the data (detection's min_stride), chosen
        return self._data

    def _step(self, name, outputs, sources=(), again=""):
        """Whether the step must run (an output is missing); an output older than a source is refused, not reused.

        ``sources``: the files every output is made from, or ``{output: its sources}``.
        """
        missing = [p for p in outputs if not os.path.exists(self.path(p))]
        for output in set(outputs) - set(missing):
            own = sources.get(output, ()) if isinstance(sources, dict) else sources
            newer = [p for p in own if os.path.getmtime(self.path(p)) > os.path.getmtime(self.path(output))]
            if newer:
                checks.fail("--out", self.out, f"a run folder whose {output} is newer than {newer[0]} ({output} is "
                            f"older); {again}", FileExistsError)  # fmt: skip
        self.log(f"[{name}] " + ("running" if missing else "done before, reusing " + ", ".join(outputs)))
        return bool(missing)

    def _timed(self, name, start):
        timings = json.load(open(self.path("timings.json"))) if os.path.exists(self.path("timings.json")) else {}
        timings[f"{name}_s"] = round(time.time() - start, 1)
        if self.chief:
            write_atomically(json.dumps(timings, indent=2).encode(), self.path("timings.json"), overwrite=True)

    def _fit_step(self, name, log_name, path, epochs, rate, make_model, record, callbacks=(), precise_bn=False):
        """``training.train`` (seed, make and compile, fit resumably, BN statistics) with the run's settings, the
        settings ``record`` recorded just before fitting; the model saved to ``path``."""
        start, s = time.time(), self.settings
        plan = training.Fit(s["task"], rate, epochs, s["batch_size"], s["seed"])
        model, log_dir, bn_images = training.train(plan, make_model, self.data, self.out, log_name, self.distribution,
                                                   callbacks, lambda: self.record_settings(record), precise_bn)  # fmt: skip
        if bn_images:
            self.log(f"[{name}] BatchNormalization statistics of the final weights, from {bn_images} training images "
                     "(augmented, as in training)")  # fmt: skip
        training.save(model, path, self.chief)
        training.release(self.distribution, self.out, log_name, log_dir, self.chief)  # a kill before: trains again
        self.log(f"[{name}] wrote {path}" if self.chief else f"[{name}] done (the chief wrote {path})")
        self._timed(name, start)

    def train(self):
        """Float training into ``float.keras``, its BatchNormalization statistics recomputed at the end."""
        # the builder's input-size rule (LR-ASPP: multiples of 16) before the data loads; the steps that take
        # files (eval, import, ...) take any size the files have
        self.task.INPUT_SIZE.check_side("--image-size", self.settings["image_size"])
        step = self.begin("train")  # flags that contradict the folder, before the data are read
        data = self.data  # a bad --data fails here, before the folder records its settings
        if not self._step("train", [FILES["float"]]):
            return
        s = self.settings
        check_weights(s["weights"])
        if s["epochs"] is None:
            s["epochs"] = self.task.default_epochs(data.train_size, s["batch_size"])
            steps = s["epochs"] * data_lib.steps_per_epoch(data.train_size, s["batch_size"])
            self.log(f"[train] {s['epochs']} epochs ({steps:,} steps of {s['batch_size']} images): "
                     f"{self.task.EPOCHS_RULE}")  # fmt: skip
        self._fit_step("train", "float", self.paths["float"], s["epochs"], FLOAT_RATE, lambda steps: training.build_model(
            s["model"], s["alpha"], s["image_size"], data.classes, steps, data.task, s["weights"]), self.records(step),
            precise_bn=True)  # fmt: skip
        advice = self.training_advice()
        if advice:
            self.log(f"[train] {advice}")

    def training_advice(self):
        """The task's advice on the float training's length (``Task.length_advice``), or None."""
        s = self.settings
        if s["epochs"] is None or "imported" in self.stored:
            return None
        history = training.read_history(self.path("float_history.csv"))
        advice = self.task.length_advice(s["epochs"], self.data.train_size, s["batch_size"], history)
        return advice and f"{advice} (with a new --out: a run folder keeps its length)"

    def import_model(self, path, overwrite=False):
        """A user's model file (``.keras``, or ``.h5`` whole models) as the run's ``float.keras``.

        The model is checked against the data first (task, classes, input
        size: one error naming MODEL), and nothing is written if it does not fit.
        A keras.applications MobileNetV3 in it becomes ours (``from_keras``: the
        same outputs), which ``mbv3 adapt`` and feature taps read; any other
        model is kept as it is. ``settings.json`` records the source and
        ``float.keras``'s SHA-256. An existing ``float.keras`` is replaced only
        with ``overwrite``; the steps after it then refuse their older outputs.
        """
        from keras_mbv3.applications.from_keras import from_keras

        model = evaluation.load_keras_model(path, "MODEL")
        evaluation.keras_predictor(model, path).check_fits(self.data, "MODEL")
        if os.path.exists(self.paths["float"]) and not overwrite:
            checks.fail("--out", self.out, f"a run folder without {FILES['float']} (pass --overwrite to replace it "
                        "with the imported model)", FileExistsError)  # fmt: skip
        step = self.begin("import")
        start = time.time()
        try:
            model, kind = from_keras(model), "a keras.applications MobileNetV3, as keras_mbv3's"
        except ValueError:
            kind = "as it is"
        os.makedirs(self.out, exist_ok=True)
        training.save(model, self.paths["float"], self.chief)
        self.record_settings(self.records(step))
        if self.chief:
            self._store({"imported": os.path.abspath(path), "float_sha256": sha256(self.paths["float"])})
        self.log(f"[import] wrote {self.paths['float']} from {path} ({kind})")
        self._timed("import", start)

    def begin(self, name):
        """Check the folder for step ``name`` (``STEPS``) before it does anything: the files it needs, then the
        flags against the folder's settings; nothing is written. Returns the ``Step``."""
        step = STEPS[name]
        for key, command in step.needs:
            self._require(key, command)
        self.record_settings(self.records(step), write=False)
        return step

    def _require(self, key, command):
        if not os.path.exists(self.paths[key]):
            checks.fail("--out", self.out, f"a run folder holding {FILES[key]} (run `mbv3 {command} --out {self.out}` first)",
                        FileNotFoundError)  # fmt: skip

    def adapt(self, **options):
        """NetAdapt of ``float.keras`` to a latency target into ``adapted.keras`` (``adapt_step``); the later steps
        take it in place of ``float.keras``. ``options``: those of ``adapt_step.Options``."""
        self.begin("adapt")
        options = adapt_step.Options(**options).check()
        s = self.settings
        adapt_step.check_task(s["task"])
        if os.path.exists(self.paths["adapted"]):
            adapt_step.refuse_other_options(self.out, options)
        if not self._step("adapt", [FILES["adapted"]], [FILES["float"]], adapt_step.AGAIN):
            return None
        start = time.time()
        plan = training.Fit(s["task"], ADAPT_RATE, options.finetune_epochs, s["batch_size"], s["seed"])
        tuning = functools.partial(self.task.load, s["data"], s["image_size"], s["batch_size"], s["data_dir"], s["seed"],
                                   repeatable=True)  # fmt: skip
        result = adapt_step.adapt(self.paths["float"], self.out, self.paths["adapted"], self.data, tuning, plan,
                                  options, self.log)  # fmt: skip
        self._timed("adapt", start)
        return result

    def _float(self):
        """The float model the later steps take: ``adapted.keras`` once ``mbv3 adapt`` wrote it, else ``float.keras``."""
        if not os.path.exists(self.paths["adapted"]):
            if os.path.exists(self.path("adapt")):
                checks.fail("--out", self.out, "a run folder whose `mbv3 adapt` finished (adapt/ holds a search "
                            "without its adapted.keras): run `mbv3 adapt` again to finish it, or delete adapt/ to "
                            "take float.keras", FileExistsError)  # fmt: skip
            return "float"
        if os.path.getmtime(self.paths["float"]) > os.path.getmtime(self.paths["adapted"]):
            checks.fail("--out", self.out, "a run folder whose adapted.keras is newer than float.keras (float.keras "
                        f"was trained again): {adapt_step.AGAIN}", FileExistsError)  # fmt: skip
        return "adapted"

    def qat(self):
        """QAT fine-tuning of ``float.keras`` (or ``adapted.keras``; ranges calibrated on training images) into
        ``qat.keras`` (``qat.h5`` on tf_keras), the ranges kept inside XNNPACK's int8 limits after every epoch."""
        step = self.begin("qat")
        data = self.data  # a bad --data fails here, before the folder records its settings
        source = self._float()
        if not self._step("qat", [FILES["qat"]], [FILES[source]], f"delete it to fine-tune the newer {FILES[source]}"):
            return
        self.log(f"[qat] from {FILES[source]}")
        self._fit_step("qat", "qat", self.paths["qat"], self.settings["qat_epochs"], QAT_RATE, lambda steps: quantize_model(
            keras.models.load_model(self.paths[source]),
            representative_dataset=data.images(CALIBRATION_SAMPLES)), self.records(step), callbacks=[KeepXnnpackLimits()])  # fmt: skip

    def export(self, overwrite=False, ptq=False):
        """``float.tflite`` (float32, fused HARD_SWISH) and ``int8.tflite`` (int8 inside, float32 pixels
        0-255 in, uint8 scores out) from the trained models, each with TFLite metadata (labels, normalization) for
        MediaPipe Tasks.

        With ``ptq`` (``--ptq``), ``int8_ptq.tflite`` instead of ``int8.tflite``:
        post-training int8 of the float model without QAT, its ranges calibrated
        on training images through the QAT engine (``export_tflite``: one
        XNNPACK partition whatever the data), the same I/O and metadata.
        Both are files to ship: inner tensor names are stripped from both alike
        (``export_tflite(strip_names=True)``); the Keras files keep the layer names.
        An export older than its Keras model is refused unless ``overwrite``
        (``--overwrite``), which exports both again.
        """
        self.begin("export --ptq" if ptq else "export")
        int8_key = "int8_ptq_tflite" if ptq else "int8_tflite"
        outputs = [FILES["float_tflite"], FILES[int8_key]]
        again = f"run `mbv3 export --out {self.out}{' --ptq' if ptq else ''} --overwrite` to export again"
        source = self._float()
        sources = {FILES["float_tflite"]: [FILES[source]], FILES[int8_key]: [FILES[source] if ptq else FILES["qat"]]}
        if not overwrite and not self._step("export", outputs, sources, again):
            return
        start = time.time()
        metadata = self.metadata()
        options = self.data.task.export_options(self.data.image_shape)  # e.g. the post-process (the data's options)
        shipped = dict(strip_names=True, overwrite=overwrite, metadata=metadata, **options)
        if overwrite or not os.path.exists(self.paths["float_tflite"]):
            export_tflite(keras.models.load_model(self.paths[source]), self.paths["float_tflite"],
                          quantization="float32", **shipped)  # fmt: skip
        if overwrite or not os.path.exists(self.paths[int8_key]):
            if ptq:
                model, calibration = keras.models.load_model(self.paths[source]), self.data.images(REPRESENTATIVE_SAMPLES)
                self.log(f"[export] post-training int8 of {FILES[source]}, ranges from {len(calibration)} training images")
            else:
                with quantize_scope():
                    model, calibration = keras.models.load_model(self.paths["qat"]), None
            export_tflite(model, self.paths[int8_key], quantization="int8", representative_dataset=calibration,
                          input_type=SHIPPED_INPUT, output_type=SHIPPED_OUTPUT, **shipped)  # fmt: skip
        self.log(f"[export] wrote {self.paths['float_tflite']} and {self.paths[int8_key]}")
        self._timed("export_ptq" if ptq else "export", start)

    def metadata(self):
        """The TFLite metadata of the run's exports: its task and the data set's class names."""
        s = self.settings
        kind = self.task
        model = f"MobileNetV3{s['model'].title().replace('-', '')}" + kind.TITLE
        if "imported" in self.stored:
            model = os.path.splitext(os.path.basename(self.stored["imported"]))[0]
        return ImageModelMetadata(s["task"], kind.metadata_labels(self.data.labels), name=model, description=(
            f"{model} (alpha {s['alpha']}) for {s['task']} of {s['image_size']}x{s['image_size']} RGB images, "
            f"trained by keras-mbv3 on {os.path.basename(str(s['data']).rstrip('/'))}"))  # fmt: skip

    def _exported(self):
        """``{"float", "int8" and/or "int8_ptq": path}`` of the run's exports."""
        self._require("float_tflite", "export")
        int8 = [k for k in INT8_KINDS if os.path.exists(self.paths[f"{k}_tflite"])]
        if not int8:
            self._require("int8_tflite", "export")
        return {k: self.paths[f"{k}_tflite"] for k in ("float", *int8)}

    def evaluate(self, files=None):
        """``{name: {"accuracy"|"miou": value}}`` of model files (default: the run's two ``.tflite``).

        Without a run folder (``out=None``) nothing is read or written: the
        settings are those given, else the defaults.
        """
        if self.out is None:
            return {name: evaluation.evaluate(path, self.data, name) for name, path in files.items()}
        files = files or self._exported()
        step = self.begin("eval")
        cached = self.path("eval.json")
        results = json.load(open(cached)) if os.path.exists(cached) else {}
        start = time.time()
        for name, path in files.items():
            key = os.path.abspath(path)
            if key not in results or results[key]["mtime"] != os.path.getmtime(path):
                results[key] = {**evaluation.evaluate(path, self.data, name), "mtime": os.path.getmtime(path)}
        self.record_settings(self.records(step))
        if self.chief:
            write_atomically(json.dumps(results, indent=2).encode(), cached, overwrite=True)
        self._timed("eval", start)
        return {name: {k: v for k, v in results[os.path.abspath(p)].items() if k != "mtime"} for name, p in files.items()}

    def bench(self, files=None, threads=1, rounds=15):
        """``{name: median ms}`` on LiteRT (default: the run's two ``.tflite``), also written to ``bench.json``."""
        checks.positive_int("--threads", threads)  # flags first, then files
        if self.out is None:
            return evaluation.bench(files, threads=threads, rounds=rounds)
        own = not files
        files = files or self._exported()
        start = time.time()
        latency = evaluation.bench(files, threads=threads, rounds=rounds)
        if self.chief and own:  # the run's figures, not those of any file benchmarked with --out
            models = {name: {"path": path, "latency_ms": round(latency[name], 4)} for name, path in files.items()}
            figures = {"threads": threads, "rounds": rounds, "models": models}
            os.makedirs(self.out, exist_ok=True)
            write_atomically(json.dumps(figures, indent=2).encode(), self.path("bench.json"), overwrite=True)
            self.log(f"[bench] wrote {self.path('bench.json')}")
        self._timed("bench", start)
        return latency

    def report(self, metrics, latency):
        """Write ``report.json``, ``report.md`` and ``report.png``; return the report dict."""
        result = {
            k: {**metrics[k], "latency_ms": latency[k], "size_bytes": os.path.getsize(self.paths[f"{k}_tflite"])}
            for k in ("float", *INT8_KINDS) if k in metrics
        }
        timings = json.load(open(self.path("timings.json"))) if os.path.exists(self.path("timings.json")) else {}
        imported = {k: self.stored[k] for k in ("imported", "float_sha256") if k in self.stored}
        result.update(settings={**self.settings, **imported}, timings_s=timings, validation_images=self.data.val_size,
                      versions=_versions())  # fmt: skip
        histories = {k: training.read_history(self.path(f"{k}_history.csv")) for k in ("float", "qat")}
        advice = self.training_advice()
        if advice:
            result["advice"] = advice
        if self.chief:
            report.write(result, histories, self.out)
        return result


def run(out, *, log=print, distribution=None, threads=1, **settings):
    """The recipe: train, qat, export, eval and bench into ``out``; return the report dict.

    ``settings`` are those of ``DEFAULTS`` (the CLI flags: ``data``, ``model``, ``epochs``, ...).
    """
    folder = Run(out, log=log, distribution=distribution, **settings)
    folder.train()
    folder.qat()
    if not folder.chief:  # tf_keras' multi-worker: the chief alone exports, evaluates and reports
        return None
    folder.export()
    metrics = folder.evaluate()
    latency = folder.bench(threads=threads)
    return folder.report(metrics, latency)


def _versions():
    import tensorflow as tf

    import keras_mbv3

    return {"keras_mbv3": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "flavour": keras_mbv3.FLAVOUR, "backend": training.backend_name(),
            "python": platform.python_version()}  # fmt: skip
