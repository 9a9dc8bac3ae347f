"""The recipe: float training, QAT fine-tuning, int8 export, LiteRT evaluation and latency, report.

Each step leaves its result in the run folder and is skipped when that result
is already there, so a rerun with the same ``--out`` resumes where it stopped
and a finished run is reused, not recomputed.
"""

import json
import os
import platform
import time

import numpy as np

from keras_mbv3 import __version__, checks
from keras_mbv3.applications import MobileNetV3Large, MobileNetV3Small
from keras_mbv3.backend import keras
from keras_mbv3.layers.composite import sublayers
from keras_mbv3.quantization import export_tflite, quantize_model, quantize_scope
from keras_mbv3.quantization.export import write_atomically
from keras_mbv3.quantization.litert import interleaved_latency_ms, interpreter, predict
from keras_mbv3.recipes import data

MODELS = {
    "small": (MobileNetV3Small, False),
    "large": (MobileNetV3Large, False),
    "small-minimalistic": (MobileNetV3Small, True),
    "large-minimalistic": (MobileNetV3Large, True),
}
DATASETS = ("digits",)


def build_model(name, alpha, image_size, classes, steps):
    """A MobileNetV3 from scratch, with BN momentum suited to ``steps`` training steps.

    keras.applications' BN momentum 0.999 averages over ~1000 steps: on a small
    data set the moving statistics never converge and validation sits at chance.
    """
    fn, minimalistic = MODELS[name]
    model = fn(input_shape=(image_size, image_size, 3), alpha=alpha, minimalistic=minimalistic, weights=None,
               classes=classes)  # fmt: skip
    momentum = float(np.clip(1.0 - 10.0 / max(steps, 1), 0.9, 0.999))
    for layer in sublayers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
    return model


def _schedule(base_rate, steps, warmup_fraction=0.05):
    warmup = max(1, int(steps * warmup_fraction))
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, steps - warmup), warmup_target=base_rate, warmup_steps=warmup
    )


def _fit(model, train, val, epochs, rate, label_smoothing=0.1):
    steps = epochs * len(train)
    model.compile(
        optimizer=keras.optimizers.Adam(_schedule(rate, steps)),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
    )
    return model.fit(train, validation_data=val, epochs=epochs, verbose=2).history


def _save_keras(model, path):
    temp = path + ".partial" + os.path.splitext(path)[1]
    model.save(temp)
    os.replace(temp, path)


def _step(name, out, outputs, log):
    """Whether step ``name`` must run (its outputs missing); logs the decision."""
    missing = [p for p in outputs if not os.path.exists(os.path.join(out, p))]
    log(f"[{name}] " + ("running" if missing else "done before, reusing " + ", ".join(outputs)))
    return bool(missing)


def run(data_name="digits", model_name="small", out="runs/demo", alpha=1.0, epochs=20, qat_epochs=3,
        image_size=32, batch_size=64, seed=0, log=print):  # fmt: skip
    """Run the recipe into the folder ``out``; return the report dict."""
    checks.one_of("--data", data_name, DATASETS)
    checks.one_of("--model", model_name, tuple(MODELS))
    checks.positive_int("--epochs", epochs)
    checks.positive_int("--qat-epochs", qat_epochs)
    checks.positive_int("--batch-size", batch_size)
    if checks.positive_int("--image-size", image_size) < 32:
        checks.fail("--image-size", image_size, "an integer of at least 32")
    os.makedirs(out, exist_ok=True)
    settings = dict(data=data_name, model=model_name, alpha=alpha, epochs=epochs, qat_epochs=qat_epochs,
                    image_size=image_size, batch_size=batch_size, seed=seed)  # fmt: skip
    settings_path = os.path.join(out, "settings.json")
    if os.path.exists(settings_path):
        before = json.load(open(settings_path))
        if before != settings:
            raise FileExistsError(
                f"{out!r} holds a run with other settings ({before}); use another --out to keep it."
            )
    else:
        write_atomically(json.dumps(settings, indent=2).encode(), settings_path)

    keras.utils.set_random_seed(seed)
    (train_x, train_y), (val_x, val_y) = data.digits(image_size, seed=seed)
    classes = data.DIGITS_CLASSES
    train = data.dataset(train_x, train_y, batch_size, classes, training=True, seed=seed)
    val = data.dataset(val_x, val_y, batch_size, classes, training=False)
    timings = {}
    paths = {k: os.path.join(out, v) for k, v in
             dict(float="float.keras", qat="qat.h5", float_tflite="float.tflite", int8_tflite="int8.tflite").items()}  # fmt: skip

    start = time.time()
    if _step("train", out, ["float.keras"], log):
        model = build_model(model_name, alpha, image_size, classes, epochs * len(train))
        history = _fit(model, train, val, epochs, rate=2e-3)
        json.dump(history, open(os.path.join(out, "float_history.json"), "w"))
        _save_keras(model, paths["float"])
    model = keras.models.load_model(paths["float"])
    timings["train_s"] = time.time() - start

    start = time.time()
    if _step("qat", out, ["qat.h5"], log):
        qat = quantize_model(model)
        history = _fit(qat, train, val, qat_epochs, rate=2e-4)
        json.dump(history, open(os.path.join(out, "qat_history.json"), "w"))
        _save_keras(qat, paths["qat"])
    timings["qat_s"] = time.time() - start

    start = time.time()
    if _step("export", out, ["float.tflite", "int8.tflite"], log):
        if not os.path.exists(paths["float_tflite"]):
            export_tflite(model, paths["float_tflite"], quantization="float32")
        if not os.path.exists(paths["int8_tflite"]):
            with quantize_scope():
                qat = keras.models.load_model(paths["qat"])
            export_tflite(qat, paths["int8_tflite"], quantization="int8")
    timings["export_s"] = time.time() - start

    start = time.time()
    content = {k: open(paths[f"{k}_tflite"], "rb").read() for k in ("float", "int8")}
    accuracy = {k: float(np.mean(predict(interpreter(c), val_x).argmax(-1) == val_y)) for k, c in content.items()}
    latency = interleaved_latency_ms(content, rounds=15, runs=10)
    timings["eval_bench_s"] = time.time() - start

    report = {
        k: {"accuracy": accuracy[k], "latency_ms": latency[k], "size_bytes": len(content[k])} for k in content
    }
    report.update(settings=settings, timings_s=timings, validation_images=int(len(val_x)), versions=_versions())
    write_atomically(json.dumps(report, indent=2).encode(), os.path.join(out, "report.json"), overwrite=True)
    write_atomically(_markdown(report).encode(), os.path.join(out, "report.md"), overwrite=True)
    return report


def _versions():
    import tensorflow as tf

    import keras_mbv3

    return {"keras_mbv3": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "flavour": keras_mbv3.FLAVOUR, "python": platform.python_version()}  # fmt: skip


def _markdown(report):
    f, q = report["float"], report["int8"]
    s = report["settings"]
    return (
        f"# mbv3 recipe: {s['model']} on {s['data']} ({s['image_size']}px)\n\n"
        "| | accuracy | LiteRT latency (1 thread) | file size |\n|---|---|---|---|\n"
        f"| float32 | {f['accuracy']:.2%} | {f['latency_ms']:.3f} ms | {f['size_bytes']:,} B |\n"
        f"| int8 (QAT) | {q['accuracy']:.2%} | {q['latency_ms']:.3f} ms | {q['size_bytes']:,} B |\n"
        f"| int8 / float | {q['accuracy'] - f['accuracy']:+.2%} | {q['latency_ms'] / f['latency_ms']:.2f}x | "
        f"{q['size_bytes'] / f['size_bytes']:.2f}x |\n\n"
        f"Validation images: {report['validation_images']}. Step times (s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in report["timings_s"].items())
        + "\n"
    )
