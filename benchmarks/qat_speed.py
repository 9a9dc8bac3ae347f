"""QAT train step time over float train step time, for both QAT engines, in one run.

MobileNetV3Small at 224x224, batch 32, ``train_on_batch`` on random images.
Each engine runs in a worker process of its own Keras line (ours on Keras 3,
tfmot on tf_keras, from ``--tfmot-python``); the workers alternate for
``--rounds`` rounds, and in each a worker times float and QAT steps
interleaved. Prints the medians and the ratios, and writes
``benchmarks/results/qat_speed.md``.

Target (issue 11): on Keras 3, QAT step <= 1.6x its float step (tfmot: 1.62x).

    python benchmarks/qat_speed.py [--rounds 3] [--steps 8] [--tfmot-python .venv-tfmot/bin/python]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def worker(steps, batch, size):
    """Time ``steps`` float and QAT train steps, interleaved; print ``{"float": [s...], "qat": [s...]}``."""
    import time

    import numpy as np

    from keras_mbv3 import keras
    from keras_mbv3.applications import MobileNetV3Small
    from keras_mbv3.quantization import quantize_model

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 1000, batch), 1000)
    model = MobileNetV3Small(weights=None, input_shape=(size, size, 3))
    qat = quantize_model(model, representative_dataset=x)
    options = {"jit_compile": False} if keras.__version__.startswith("3") else {}
    for m in (model, qat):
        m.compile(keras.optimizers.Adam(1e-5), "categorical_crossentropy", **options)
        m.train_on_batch(x, y)  # trace
        m.train_on_batch(x, y)
    times = {"float": [], "qat": []}
    for _ in range(steps):
        for name, m in (("float", model), ("qat", qat)):
            start = time.perf_counter()
            m.train_on_batch(x, y)
            times[name].append(time.perf_counter() - start)
    print("RESULT " + json.dumps(times))


def run_worker(python, legacy, steps, batch, size):
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1" if legacy else "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [python, os.path.abspath(__file__), "--worker", "--steps", str(steps), "--batch", str(batch),
               "--size", str(size)]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(output.split("RESULT ", 1)[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--tfmot-python", default=os.path.join(HERE, "..", ".venv-tfmot", "bin", "python"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.steps, args.batch, args.size)
    engines = {"ours (Keras 3)": (sys.executable, False)}
    if os.path.exists(args.tfmot_python):
        engines["tfmot (tf_keras)"] = (args.tfmot_python, True)
    samples = {name: {"float": [], "qat": []} for name in engines}
    for round_ in range(args.rounds):
        for name, (python, legacy) in engines.items():
            times = run_worker(python, legacy, args.steps, args.batch, args.size)
            for kind in ("float", "qat"):
                samples[name][kind] += times[kind]
            print(f"round {round_ + 1}/{args.rounds} {name}: float {statistics.median(times['float']):.3f} s, "
                  f"qat {statistics.median(times['qat']):.3f} s", flush=True)  # fmt: skip
    sys.path.insert(0, HERE)
    from common import markdown_table, write_result

    rows = []
    for name, kinds in samples.items():
        float_s, qat_s = statistics.median(kinds["float"]), statistics.median(kinds["qat"])
        rows.append([name, f"{float_s:.3f}", f"{qat_s:.3f}", f"{qat_s / float_s:.2f}"])
    body = markdown_table(["engine", "float step (s)", "QAT step (s)", "QAT / float"], rows)
    body += (f"\n\nMobileNetV3Small {args.size}x{args.size}, batch {args.batch}, train_on_batch, medians of "
             f"{args.rounds} x {args.steps} steps, engines alternating.")  # fmt: skip
    print(body)
    print("written to", write_result("qat_speed.md", "QAT train step time", body))


if __name__ == "__main__":
    main()
