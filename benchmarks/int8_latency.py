"""int8 latency on LiteRT: our QAT int8 form against float and keras.applications.

For Small and Large at 224x224, in one process, one thread, interleaved rounds,
medians: our QAT int8, our float, keras.applications post-training int8 and
float, and our network with every hard-swish replaced by ReLU in QAT int8 (the
lower bound at equal MAdds). On Keras 3 it also times the tfmot engine's
export of the same network, made by a worker on tf_keras (``--tfmot-python``),
so that both QAT engines are measured side by side. Prints times, XNNPACK
partitions and ratios and writes ``benchmarks/results/int8_latency.md``.

Targets (issue 4): ours int8 / ours float <= 0.55; ours int8 <= 0.2x (Small) and
0.3x (Large) keras.applications int8; within 10% of the ReLU network.
Issue 11: the Keras 3 engine's int8 / tfmot's in 0.97-1.03. Issue 12: the same
QAT model with the I/O MediaPipe Tasks take (they refuse int8 I/O) at most 3%
slower than with int8 I/O: float32 pixels in and uint8 scores out (the recipe's
int8.tflite), and uint8 pixels in; where mediapipe is installed, MediaPipe's
ImageClassifier times both files end to end (its own threads: run under
``taskset -c 0`` for one core).

    python benchmarks/int8_latency.py [--rounds 15] [--models small,large] [--tfmot-python .venv-tfmot/bin/python]
"""

import argparse
import importlib.util
import os
import subprocess
import tempfile

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import markdown_table, single_thread, write_result  # noqa: E402

from keras_mbv3 import IS_KERAS_3, keras  # noqa: E402
from keras_mbv3.applications import specs  # noqa: E402
from keras_mbv3.applications.mobilenet_v3 import build_mobilenet_v3  # noqa: E402
from keras_mbv3.quantization import ImageModelMetadata, export_tflite, quantize_model  # noqa: E402
from keras_mbv3.quantization.litert import graph_report, interleaved_latency_ms  # noqa: E402

NETWORKS = {"small": (specs.SMALL, keras.applications.MobileNetV3Small),
            "large": (specs.LARGE, keras.applications.MobileNetV3Large)}  # fmt: skip
HERE = os.path.dirname(os.path.abspath(__file__))
TFMOT = "ours int8 (QAT, tfmot engine)"
UINT8 = "ours int8 (QAT), uint8 I/O"
SHIPPED = "ours int8 (QAT), float32 in, uint8 out"


def calibration_images():
    return np.random.default_rng(0).uniform(0, 255, (16, 224, 224, 3)).astype("float32")


def qat_export(spec, calibration, relu_only=False, io_types=(("int8", "int8"),)):
    """The QAT int8 export of the network, one per (input, output) type; the MediaPipe forms carry metadata."""
    model = build_mobilenet_v3(spec, input_shape=(224, 224, 3), weights=None, relu_only=relu_only)
    qat = quantize_model(model, representative_dataset=calibration)
    metadata = ImageModelMetadata("classification", [str(i) for i in range(1000)])
    exports = [export_tflite(qat, quantization="int8", input_type=i, output_type=o,
                             metadata=None if i == "int8" else metadata) for i, o in io_types]  # fmt: skip
    return exports if len(io_types) > 1 else exports[0]


def mediapipe_latency_ms(models, rounds, runs=20, warmup=5):
    """Median time of MediaPipe's ImageClassifier.classify on one 224x224 image per model, interleaved rounds."""
    import time

    import mediapipe
    from mediapipe.tasks.python import BaseOptions, vision

    pixels = np.random.default_rng(1).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    image = mediapipe.Image(image_format=mediapipe.ImageFormat.SRGB, data=pixels)
    with tempfile.TemporaryDirectory() as folder:
        classifiers = {}
        for name, content in models.items():
            path = os.path.join(folder, f"{len(classifiers)}.tflite")
            with open(path, "wb") as f:
                f.write(content)
            options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=path), max_results=5)
            classifiers[name] = vision.ImageClassifier.create_from_options(options)
        samples = {name: [] for name in models}
        for _ in range(rounds):
            for name, classifier in classifiers.items():
                for _ in range(warmup):
                    classifier.classify(image)
                start = time.perf_counter()
                for _ in range(runs):
                    classifier.classify(image)
                samples[name].append((time.perf_counter() - start) * 1000 / runs)
        for classifier in classifiers.values():
            classifier.close()
    return {name: float(np.median(times)) for name, times in samples.items()}


def tfmot_export(size, python):
    """The tfmot engine's int8 export of the network, made by a worker process on tf_keras."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "tfmot.tflite")
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
        subprocess.run([python, os.path.abspath(__file__), "--export-worker", size, path], env=env, check=True,
                       capture_output=True)  # fmt: skip
        return open(path, "rb").read()


def plain_post_training_int8(model, calibration):
    """keras.applications' int8 as its users get it: the TFLite converter on the model as it is."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    converter.representative_dataset = lambda: ([image[None]] for image in calibration)
    return converter.convert()


def variants(size, calibration, tfmot_python):
    spec, reference_fn = NETWORKS[size]
    ours = build_mobilenet_v3(spec, input_shape=(224, 224, 3), weights=None)
    reference = reference_fn(input_shape=(224, 224, 3), weights=None)
    int8_io, uint8_io, shipped = qat_export(spec, calibration, io_types=(("int8", "int8"), ("uint8", "uint8"),
                                                                         ("float32", "uint8")))  # fmt: skip
    found = {
        "ours int8 (QAT)": int8_io,
        UINT8: uint8_io,
        SHIPPED: shipped,
        "ours float": export_tflite(ours, quantization="float32"),
        "keras.applications int8 (PTQ)": plain_post_training_int8(reference, calibration),
        "keras.applications float": export_tflite(reference, quantization="float32"),
        "ReLU-only int8 (QAT)": qat_export(spec, calibration, relu_only=True),
    }
    if IS_KERAS_3 and os.path.exists(tfmot_python):
        found[TFMOT] = tfmot_export(size, tfmot_python)
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--models", default="small,large")
    parser.add_argument("--tfmot-python", default=os.path.join(HERE, "..", ".venv-tfmot", "bin", "python"))
    parser.add_argument("--export-worker", nargs=2, metavar=("MODEL", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.export_worker:
        size, path = args.export_worker
        with open(path, "wb") as f:
            f.write(qat_export(NETWORKS[size][0], calibration_images()))
        return
    single_thread()
    calibration = calibration_images()
    rows, ratios, mediapipe_rows = [], [], []
    for size in args.models.split(","):
        models = variants(size, calibration, args.tfmot_python)
        latency = interleaved_latency_ms(models, rounds=args.rounds)
        if importlib.util.find_spec("mediapipe"):
            end_to_end = mediapipe_latency_ms({name: models[name] for name in (UINT8, SHIPPED)}, rounds=args.rounds)
            mediapipe_rows.append([size, f"{end_to_end[UINT8]:.3f}", f"{end_to_end[SHIPPED]:.3f}",
                                   f"{end_to_end[SHIPPED] / end_to_end[UINT8]:.3f}"])  # fmt: skip
        for name, content in models.items():
            report = graph_report(content)
            rows.append([size, name, f"{latency[name]:.3f}", report["partitions"],
                         ", ".join(f"{k} x{v}" for k, v in sorted(report["undelegated"].items())) or "-"])  # fmt: skip
        ours = latency["ours int8 (QAT)"]
        ratios.append([
            size, f"{ours / latency['ours float']:.2f}", f"{ours / latency['keras.applications int8 (PTQ)']:.2f}",
            f"{ours / latency['ReLU-only int8 (QAT)']:.2f}", f"{latency['ours float'] / latency['keras.applications float']:.2f}",
            f"{ours / latency[TFMOT]:.2f}" if TFMOT in latency else "-", f"{latency[UINT8] / ours:.3f}", f"{latency[SHIPPED] / ours:.3f}",
        ])  # fmt: skip
        print(rows[-len(models):], ratios[-1], flush=True)
    body = markdown_table(["model", "variant", "median ms", "XNNPACK partitions", "undelegated ops"], rows)
    body += "\n\n" + markdown_table(
        ["model", "ours int8 / ours float", "ours int8 / keras int8", "ours int8 / ReLU int8", "ours float / keras float",
         "ours int8 / tfmot engine's int8", "uint8 I/O / int8 I/O", "float32 in, uint8 out / int8 I/O"],
        ratios,
    )  # fmt: skip
    if mediapipe_rows:
        body += "\n\nMediaPipe ImageClassifier, classify() of one 224x224 image, median ms:\n\n" + markdown_table(
            ["model", "uint8 pixels in", "float32 pixels in (int8.tflite)", "float32 in / uint8 in"], mediapipe_rows)
    body += f"\n\nQAT engine of 'ours int8 (QAT)': {'ours (Keras 3)' if IS_KERAS_3 else 'tfmot (tf_keras)'}."
    print(body)
    print("written to", write_result("int8_latency.md", "int8 latency, 224x224, LiteRT, 1 thread", body))


if __name__ == "__main__":
    main()
