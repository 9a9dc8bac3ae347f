"""Your own model to int8: our QAT and post-training int8 against the converter's and ai-edge-quantizer's PTQ.

A keras.applications MobileNetV3Small (from scratch: nothing downloads here)
is fine-tuned on digits at 96 px, saved as a user would, taken in with
``mbv3 import`` (``Run.import_model``), then made int8 four ways:

* our QAT (``mbv3 qat`` + ``mbv3 export``: ``int8.tflite``);
* our post-training int8 (``mbv3 export --ptq``: ``int8_ptq.tflite``);
* the plain ``TFLiteConverter`` post-training int8 of the Keras model as it is;
* ai-edge-quantizer's ``static_wi8_ai8`` recipe on the float ``.tflite`` (with its tensor names: the tool
  needs them, so not the run's stripped ``float.tflite``).

For each: validation accuracy (LiteRT), latency (1 thread, interleaved rounds,
medians), XNNPACK partitions and file size. Writes
``benchmarks/results/ptq_vs_qat.md``. Issue 21's targets: our QAT int8 accuracy
at least each PTQ's and within 0.5 point of float; our int8 latency at most 0.5x
the plain converter's and ai-edge-quantizer's, in one partition.

    python benchmarks/ptq_vs_qat.py [--epochs 8] [--qat-epochs 2] [--rounds 15] [--out runs/ptq_vs_qat]
"""

import argparse
import os

import numpy as np
from common import markdown_table, write_result

from keras_mbv3 import keras
from keras_mbv3.batchnorm import precise_batchnorm
from keras_mbv3.files import write_atomically
from keras_mbv3.quantization import export_tflite
from keras_mbv3.quantization.calibration import REPRESENTATIVE_SAMPLES
from keras_mbv3.quantization.compare import ai_edge_quantizer_int8, plain_converter_int8
from keras_mbv3.quantization.litert import graph_report, interleaved_latency_ms
from keras_mbv3.recipes import evaluation, recipe, training

SIZE = 96


def fine_tuned_keras_model(run, epochs):
    """keras.applications' MobileNetV3Small trained on the run's data as a user would (then precise BN statistics:
    its momentum 0.999 leaves the moving averages of a short training at their start)."""
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV3Small(input_shape=(SIZE, SIZE, 3), weights=None, classes=run.data.classes,
                                                dropout_rate=0.1)  # fmt: skip
    steps = epochs * -(-run.data.train_size // run.settings["batch_size"])
    training.compile_for(model, "classification", recipe.FLOAT_RATE, steps)
    model.fit(run.data.train, validation_data=run.data.val, epochs=epochs, verbose=2)
    precise_batchnorm(model, run.data.train)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", default=os.path.join("runs", "ptq_vs_qat"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    source = os.path.join(args.out, "keras_small.keras")
    run = recipe.Run(os.path.join(args.out, "run"), data="digits", image_size=SIZE, batch_size=32,
                     qat_epochs=args.qat_epochs)  # fmt: skip
    if not os.path.exists(source):
        fine_tuned_keras_model(run, args.epochs).save(source)
    if not os.path.exists(run.paths["float"]):
        run.import_model(source)
    run.qat()
    run.export()
    run.export(ptq=True)
    files = {"float32": run.paths["float_tflite"], "ours QAT int8": run.paths["int8_tflite"],
             "ours PTQ int8": run.paths["int8_ptq_tflite"]}  # fmt: skip
    images = run.data.images(REPRESENTATIVE_SAMPLES)
    others = {
        "converter PTQ int8": lambda: plain_converter_int8(keras.models.load_model(source), images),
        "ai-edge-quantizer static_wi8_ai8": lambda: ai_edge_quantizer_int8(
            export_tflite(keras.models.load_model(run.paths["float"]), quantization="float32"), images),
    }
    for name, make in others.items():
        path = os.path.join(args.out, name.split()[0] + ".tflite")
        if not os.path.exists(path):
            write_atomically(make(), path)
        files[name] = path
    accuracy = {name: evaluation.evaluate(path, run.data, name)["accuracy"] for name, path in files.items()}
    contents = {name: open(path, "rb").read() for name, path in files.items()}
    latency = interleaved_latency_ms(contents, rounds=args.rounds)
    rows = []
    for name, content in contents.items():
        report = graph_report(content)
        rows.append([name, f"{accuracy[name]:.2%}", f"{latency[name]:.4f} ms",
                     f"{latency[name] / latency['ours QAT int8']:.2f}x", report["partitions"],
                     "HARD_SWISH" in report["ops"], f"{len(content):,} B"])  # fmt: skip
    table = markdown_table(["model", "accuracy", "latency (1 thread)", "/ ours QAT", "partitions", "HARD_SWISH ops",
                            "size"], rows)  # fmt: skip
    body = (f"keras.applications MobileNetV3Small, {args.epochs} epochs on digits at {SIZE}x{SIZE} from scratch, "
            f"then `mbv3 import`; QAT {args.qat_epochs} epochs; {run.data.val_size} validation images; "
            f"{args.rounds} interleaved rounds, medians.\n\n{table}")  # fmt: skip
    print(body)
    print("wrote", write_result("ptq_vs_qat.md", "Your model to int8: QAT and PTQ side by side", body))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
