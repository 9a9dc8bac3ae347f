"""Our MobileNetV3 against keras.applications with the same weights, float.

For Large and Small at 224x224: the largest output difference, LiteRT float
latency (1 thread, interleaved rounds, medians) and Keras ``predict``
throughput (1 thread, interleaved, medians), as ours/keras.applications ratios.
Target: ratio <= 1.02 (no slower). Writes ``benchmarks/results/float_parity.md``.

    python benchmarks/float_parity.py [--rounds 15]
"""

import argparse
import statistics
import time

import numpy as np
from common import markdown_table, randomize_batchnorm, single_thread, write_result

from keras_mbv3 import FLAVOUR, keras
from keras_mbv3.applications import MobileNetV3Large, MobileNetV3Small
from keras_mbv3.applications.weights import copy_from_keras_applications
from keras_mbv3.quantization.export import export_tflite
from keras_mbv3.quantization.litert import interleaved_latency_ms

MODELS = {"Large": (MobileNetV3Large, keras.applications.MobileNetV3Large),
          "Small": (MobileNetV3Small, keras.applications.MobileNetV3Small)}  # fmt: skip


def predict_throughput(models, images, rounds):
    """Images per second of ``model.predict`` for each model, interleaved rounds, medians."""
    samples = {name: [] for name in models}
    for model in models.values():
        model.predict(images, batch_size=len(images), verbose=0)
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            model.predict(images, batch_size=len(images), verbose=0)
            samples[name].append(len(images) / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in samples.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    single_thread()
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (16, 224, 224, 3)).astype("float32")
    rows = []
    for size, (ours_fn, theirs_fn) in MODELS.items():
        theirs = theirs_fn(weights=None, input_shape=(224, 224, 3), classifier_activation=None)
        randomize_batchnorm(theirs, rng)
        ours = ours_fn(weights=None, input_shape=(224, 224, 3), classifier_activation=None)
        copy_from_keras_applications(ours, theirs)
        difference = float(np.abs(ours.predict(images, verbose=0) - theirs.predict(images, verbose=0)).max())
        latency = interleaved_latency_ms(
            {"ours": export_tflite(ours, quantization="float32"), "keras": export_tflite(theirs, quantization="float32")},
            rounds=args.rounds,
        )
        throughput = predict_throughput({"ours": ours, "keras": theirs}, images, args.rounds)
        rows.append([
            size, f"{difference:.2e}", f"{latency['ours']:.2f}", f"{latency['keras']:.2f}",
            f"{latency['ours'] / latency['keras']:.3f}", f"{throughput['ours']:.1f}", f"{throughput['keras']:.1f}",
            f"{throughput['keras'] / throughput['ours']:.3f}",
        ])  # fmt: skip
        print(rows[-1], flush=True)
    header = ["model", "max abs logit diff", "LiteRT ms ours", "LiteRT ms keras", "latency ratio",
              "predict img/s ours", "predict img/s keras", "time ratio"]  # fmt: skip
    table = markdown_table(header, rows)
    path = write_result("float_parity.md", f"Float parity with keras.applications ({FLAVOUR}, 1 thread)", table)
    print(table)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
