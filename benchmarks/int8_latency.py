"""int8 latency on LiteRT: our QAT int8 form against float and keras.applications.

For Small and Large at 224x224, in one process, one thread, interleaved rounds,
medians: our QAT int8, our float, keras.applications post-training int8 and
float, and our network with every hard-swish replaced by ReLU in QAT int8 (the
lower bound at equal MAdds). Prints times, XNNPACK partitions and ratios and
writes ``benchmarks/results/int8_latency.md``. Needs ``TF_USE_LEGACY_KERAS=1``
(set here before TensorFlow loads).

Targets (issue 4): ours int8 / ours float <= 0.55; ours int8 <= 0.2x (Small) and
0.3x (Large) keras.applications int8; within 10% of the ReLU network.

    python benchmarks/int8_latency.py [--rounds 15] [--models small,large]
"""

import argparse
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
from common import markdown_table, single_thread, write_result  # noqa: E402

from keras_mbv3 import keras  # noqa: E402
from keras_mbv3.applications import specs  # noqa: E402
from keras_mbv3.applications.mobilenet_v3 import build_mobilenet_v3  # noqa: E402
from keras_mbv3.quantization import export_tflite, quantize_model  # noqa: E402
from keras_mbv3.quantization.litert import graph_report, interleaved_latency_ms  # noqa: E402

NETWORKS = {"small": (specs.SMALL, keras.applications.MobileNetV3Small),
            "large": (specs.LARGE, keras.applications.MobileNetV3Large)}  # fmt: skip


def variants(size, calibration):
    spec, reference_fn = NETWORKS[size]
    ours = build_mobilenet_v3(spec, input_shape=(224, 224, 3), weights=None)
    relu = build_mobilenet_v3(spec, input_shape=(224, 224, 3), weights=None, relu_only=True)
    reference = reference_fn(input_shape=(224, 224, 3), weights=None)
    return {
        "ours int8 (QAT)": export_tflite(quantize_model(ours), quantization="int8"),
        "ours float": export_tflite(ours, quantization="float32"),
        "keras.applications int8 (PTQ)": export_tflite(reference, quantization="int8",
                                                       representative_dataset=calibration),  # fmt: skip
        "keras.applications float": export_tflite(reference, quantization="float32"),
        "ReLU-only int8 (QAT)": export_tflite(quantize_model(relu), quantization="int8"),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--models", default="small,large")
    args = parser.parse_args()
    single_thread()
    calibration = np.random.default_rng(0).uniform(0, 255, (16, 224, 224, 3)).astype("float32")
    rows, ratios = [], []
    for size in args.models.split(","):
        models = variants(size, calibration)
        latency = interleaved_latency_ms(models, rounds=args.rounds)
        for name, content in models.items():
            report = graph_report(content)
            rows.append([size, name, f"{latency[name]:.3f}", report["partitions"],
                         ", ".join(f"{k} x{v}" for k, v in sorted(report["undelegated"].items())) or "-"])  # fmt: skip
        ours = latency["ours int8 (QAT)"]
        ratios.append([
            size, f"{ours / latency['ours float']:.2f}", f"{ours / latency['keras.applications int8 (PTQ)']:.2f}",
            f"{ours / latency['ReLU-only int8 (QAT)']:.2f}", f"{latency['ours float'] / latency['keras.applications float']:.2f}",
        ])  # fmt: skip
        print(rows[-5:], ratios[-1], flush=True)
    body = markdown_table(["model", "variant", "median ms", "XNNPACK partitions", "undelegated ops"], rows)
    body += "\n\n" + markdown_table(
        ["model", "ours int8 / ours float", "ours int8 / keras int8", "ours int8 / ReLU int8", "ours float / keras float"],
        ratios,
    )
    print(body)
    print("written to", write_result("int8_latency.md", "int8 latency, 224x224, LiteRT, 1 thread", body))


if __name__ == "__main__":
    main()
