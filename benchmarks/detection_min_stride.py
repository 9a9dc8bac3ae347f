"""SSDLite's ``min_stride=8`` (a C3 map first, issue 24) against the paper's stride-16 layout: int8 latency, size.

SSDLite Small (reduced tail) with TFLite_Detection_PostProcess, our QAT int8 as
``mbv3 export`` ships it, on LiteRT, one thread, interleaved rounds, medians: each
first-map stride at each ``--sizes`` side. Parameters, MAdds and anchors beside.
The models have random weights, BN statistics from 16 random images and are
calibrated on them; the post-process keeps scores >= 0.5. The question it answers:
at which input side does the stride-16 layout cost what stride 8 costs at 96 px
(the latency budget against which a learning curve compares the two).

    python benchmarks/detection_min_stride.py [--sizes 96 128 160 320] [--classes 11] [--rounds 11]
"""

import argparse

import numpy as np
from common import markdown_table, single_thread, write_result

from keras_mbv3.applications.complexity import count_madds
from keras_mbv3.applications.ssdlite import SSDLiteMobileNetV3Small, anchors, postprocess
from keras_mbv3.batchnorm import precise_batchnorm
from keras_mbv3.quantization import export_tflite, quantize_model
from keras_mbv3.quantization.litert import graph_report, interleaved_latency_ms

STRIDES = (16, 8)


def shipped_int8(size, stride, classes):
    """``(model, int8 .tflite bytes)`` of SSDLite Small at ``size`` px with the first map at ``stride``."""
    images = np.random.default_rng(0).uniform(0, 255, (16, size, size, 3)).astype("float32")
    model = SSDLiteMobileNetV3Small(classes, input_shape=(size, size, 3), bn_momentum=0.9, min_stride=stride)
    precise_batchnorm(model, images)
    qat = quantize_model(model, representative_dataset=images)
    post = postprocess((size, size), score_threshold=0.5, min_stride=stride)
    return model, export_tflite(qat, quantization="int8", input_type="float32", output_type="uint8",
                                postprocess=post)  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 128, 160, 320])
    parser.add_argument("--classes", type=int, default=11, help="including the background (digits: 11)")
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    single_thread()
    models, rows = {}, {}
    for size in args.sizes:
        for stride in STRIDES:
            name = f"{size} px, stride {stride}"
            model, models[name] = shipped_int8(size, stride, args.classes)
            report = graph_report(models[name])
            params = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
            rows[name] = [str(size), str(stride), f"{len(anchors(model)):,}", f"{params:,}",
                          f"{count_madds(model) / 1e6:.1f}M", str(report["partitions"])]  # fmt: skip
            print(name, rows[name], flush=True)
    latency = interleaved_latency_ms(models, rounds=args.rounds)
    base = {size: latency[f"{size} px, stride 16"] for size in args.sizes}
    table = [[*rows[name], f"{latency[name]:.3f}", f"{latency[name] / base[int(name.split()[0])]:.2f}"]
             for name in models]  # fmt: skip
    body = markdown_table(["side (px)", "first stride", "anchors", "parameters", "MAdds", "XNNPACK partitions",
                           "int8 + post-process, median ms", "/ stride 16 at this side"], table)  # fmt: skip
    body += f"\n\nSSDLite Small, {args.classes} classes, reduced tail; {args.rounds} interleaved rounds, 1 thread."
    print(body)
    print("written to", write_result("detection_min_stride.md", "SSDLite min_stride 8 against 16, int8 LiteRT", body))


if __name__ == "__main__":
    main()
