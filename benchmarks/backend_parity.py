"""One ``.keras`` file on TensorFlow, JAX and PyTorch: how far apart are the outputs (issue 22).

Models made here on TensorFlow with random weights (BN statistics and affine weights too) are saved as
``.keras``; a worker process per backend (one process has one backend) loads each and computes its
outputs on the same 4 images. Float models: the largest difference, relative to the largest output
(issue 22 asks 1e-5), and the share of values that differ at all. The QAT model (Small, ranges
calibrated on 8 images and moved by one train step on TensorFlow): the same two figures (issue 22 asks
identical fake-quantized outputs). Writes ``benchmarks/results/backend_parity.md``.

    python benchmarks/backend_parity.py [--size 224] [--backends jax,torch]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def worker(folder):
    """Load every model of ``folder`` on this process's backend and save its outputs."""
    from keras_mbv3 import keras

    backend = keras.backend.backend()
    for name in json.load(open(os.path.join(folder, "names.json"))):
        model = keras.models.load_model(os.path.join(folder, f"{name}.keras"))
        outputs = model(np.load(os.path.join(folder, f"{name}.x.npy")), training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        np.savez(os.path.join(folder, f"{name}.{backend}.npz"), *[keras.ops.convert_to_numpy(o) for o in outputs])


def make_models(folder, size):
    """Save the models and their images into ``folder``; return ``{name: outputs on TensorFlow}``."""
    from keras_mbv3 import keras
    from keras_mbv3.applications import (LRASPPMobileNetV3Small, MobileNetV3Large, MobileNetV3Small,
                                         SSDLiteMobileNetV3Small)  # fmt: skip
    from keras_mbv3.quantization import quantize_model

    from common import randomize_batchnorm

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    shape = (size, size, 3)
    models = {
        "MobileNetV3Small": MobileNetV3Small(input_shape=shape, weights=None, classifier_activation=None),
        "MobileNetV3Large": MobileNetV3Large(input_shape=shape, weights=None, classifier_activation=None),
        "LRASPPMobileNetV3Small": LRASPPMobileNetV3Small(21, input_shape=shape),
        "SSDLiteMobileNetV3Small": SSDLiteMobileNetV3Small(21, input_shape=shape),
    }
    found = {}
    images = rng.uniform(0, 255, (8, *shape)).astype("float32")
    for name, model in models.items():
        randomize_batchnorm(model, rng)
        found[name] = model
    qat = quantize_model(found["MobileNetV3Small"], representative_dataset=images)
    qat.compile(keras.optimizers.SGD(1e-3), "mse")
    qat.train_on_batch(images[:4], qat(images[:4]).numpy() * 0.9)  # the ranges move
    found["MobileNetV3Small QAT"] = qat
    results = {}
    for name, model in found.items():
        model.save(os.path.join(folder, f"{name}.keras"))
        np.save(os.path.join(folder, f"{name}.x.npy"), images[:4])
        outputs = model(images[:4], training=False)
        results[name] = [np.asarray(o) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]
    with open(os.path.join(folder, "names.json"), "w") as f:
        json.dump(list(found), f)
    return results


def compare(ours, theirs):
    """``(largest difference / largest output, share of values that differ)``, as text."""
    ours, theirs = np.concatenate([o.ravel() for o in ours]), np.concatenate([t.ravel() for t in theirs])
    difference = np.abs(ours - theirs)
    return f"{difference.max() / np.abs(ours).max():.1e}", f"{np.mean(difference > 0):.1%}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--backends", default="jax,torch")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)
    os.environ.update(KERAS_BACKEND="tensorflow", TF_USE_LEGACY_KERAS="0")
    sys.path.insert(0, HERE)
    from common import markdown_table, write_result

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        made = make_models(folder, args.size)
        for backend in args.backends.split(","):
            env = {**os.environ, "KERAS_BACKEND": backend, "TF_USE_LEGACY_KERAS": "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
            subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", folder], env=env, check=True)
            for name, outputs in made.items():
                theirs = np.load(os.path.join(folder, f"{name}.{backend}.npz"))
                theirs = [theirs[f"arr_{k}"] for k in range(len(theirs.files))]
                rows.append([name, backend, *compare(outputs, theirs)])
                print(rows[-1], flush=True)
    header = ["model", "backend", "largest difference / largest output", "values that differ"]
    body = markdown_table(header, rows)
    body += (f"\n\n{args.size}x{args.size}, 4 random images, random weights, made and saved on TensorFlow, loaded "
             "by one worker process per backend; against TensorFlow's outputs.")  # fmt: skip
    print(body)
    print("written to", write_result("backend_parity.md", "The same .keras on each backend", body))


if __name__ == "__main__":
    main()
