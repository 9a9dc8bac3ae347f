"""SSDLite latency on LiteRT at 320x320: our QAT int8 against float and plain post-training int8.

For SSDLite Small and Large (91 classes, reduced tail), in one process, one
thread, interleaved rounds, medians: our QAT int8, our float, and the same
network converted with post-training int8 as a keras.applications user would
(the TFLite converter on the float model as it is: HARD_SWISH left in), each
with and without TFLite_Detection_PostProcess. Parameters and MAdds beside the
paper's Table 6. All models have BN statistics from 16 random images and are
calibrated on them; with random weights the post-process sees more candidate
boxes than a trained model's, so its row is an upper bound (score threshold 0.5).

    python benchmarks/detection_latency.py [--rounds 11] [--models small,large]
"""

import argparse

import numpy as np
import tensorflow as tf
from common import markdown_table, single_thread, write_result

from keras_mbv3.applications.complexity import count_madds
from keras_mbv3.applications.ssdlite import SSDLiteMobileNetV3Large, SSDLiteMobileNetV3Small, anchors
from keras_mbv3.backend import IS_KERAS_3
from keras_mbv3.batchnorm import precise_batchnorm
from keras_mbv3.quantization import DetectionPostProcess, export_tflite, quantize_model
from keras_mbv3.quantization.litert import graph_report, interleaved_latency_ms

NETWORKS = {"small": SSDLiteMobileNetV3Small, "large": SSDLiteMobileNetV3Large}
PAPER = {"small": ("16.1", "1.77M", "0.16B"), "large": ("22.0", "3.22M", "0.51B")}  # Table 6: mAP, params, MAdds
SIZE, CLASSES = 320, 91


def plain_post_training_int8(model, images, postprocess):
    """The converter on the float model as it is (no int8 form), as keras.applications users convert."""
    from keras_mbv3.quantization import converter

    tflite = converter._converter(model, postprocess)
    tflite.optimizations = [tf.lite.Optimize.DEFAULT]
    tflite.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    tflite.inference_input_type = tf.int8
    if postprocess is None:
        tflite.inference_output_type = tf.int8
    tflite.representative_dataset = lambda: ([image[None]] for image in images)
    return tflite.convert()


def variants(size, images):
    model = NETWORKS[size](CLASSES, input_shape=(SIZE, SIZE, 3), bn_momentum=0.9)
    precise_batchnorm(model, images)
    qat = quantize_model(model, representative_dataset=images)
    post = DetectionPostProcess(anchors(model), score_threshold=0.5)
    found = {}
    for suffix, process in (("", None), (" + post-process", post)):
        found["ours int8 (QAT)" + suffix] = export_tflite(qat, quantization="int8", input_type="float32",
                                                          output_type="float32", postprocess=process)  # fmt: skip
        found["ours float" + suffix] = export_tflite(model, quantization="float32", postprocess=process)
        found["plain PTQ int8" + suffix] = plain_post_training_int8(model, images, process)
    return model, found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--models", default="small,large")
    args = parser.parse_args()
    single_thread()
    images = np.random.default_rng(0).uniform(0, 255, (16, SIZE, SIZE, 3)).astype("float32")
    rows, ratios, complexity = [], [], []
    for size in args.models.split(","):
        model, models = variants(size, images)
        latency = interleaved_latency_ms(models, rounds=args.rounds)
        for name, content in models.items():
            report = graph_report(content)
            rows.append([size, name, f"{latency[name]:.3f}", report["partitions"],
                         ", ".join(f"{k} x{v}" for k, v in sorted(report["undelegated"].items())) or "-"])  # fmt: skip
        ours, post = latency["ours int8 (QAT)"], latency["ours int8 (QAT) + post-process"]
        ratios.append([size, f"{ours / latency['ours float']:.2f}", f"{ours / latency['plain PTQ int8']:.2f}",
                       f"{post / latency['plain PTQ int8 + post-process']:.2f}", f"{post - ours:.3f}"])  # fmt: skip
        params = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        complexity.append([size, f"{params:,}", f"{count_madds(model) / 1e9:.3f}B", *PAPER[size]])
        print(rows[-len(models):], ratios[-1], complexity[-1], flush=True)
    body = markdown_table(["model", "variant", "median ms", "XNNPACK partitions", "undelegated ops"], rows)
    body += "\n\n" + markdown_table(["model", "ours int8 / ours float", "ours int8 / plain PTQ int8",
                                     "with post-process: ours / plain PTQ", "post-process ms (ours int8)"], ratios)
    body += "\n\n" + markdown_table(["model", "parameters (91 classes)", "MAdds (320x320)", "paper mAP",
                                     "paper parameters", "paper MAdds"], complexity)  # fmt: skip
    body += f"\n\nQAT engine: {'ours (Keras 3)' if IS_KERAS_3 else 'tfmot (tf_keras)'}."
    print(body)
    print("written to", write_result("detection_latency.md", "SSDLite latency, 320x320, LiteRT, 1 thread", body))


if __name__ == "__main__":
    main()
