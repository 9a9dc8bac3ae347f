"""Detection on a user's small data set (issue 24): a learning-curve table on a COCO-format folder.

    python benchmarks/detection_small_data.py WORK [--scales 0.15 0.45] [--size 160] [--train 800] [--val 150]
        [--run NAME "FLAGS" ...]

writes WORK/data (once): digits canvases of ``--size`` px, 1-3 digits of ``--scales`` of the side, as a
COCO-format folder (train/ and val/, PNGs and annotations.json), the kind of folder a user brings. Then each
``--run NAME "FLAGS"`` is ``mbv3 recipe --task detection --data WORK/data --out WORK/NAME FLAGS`` in its own
process, one after another, and the table gives its training steps, float and int8 mAP@.5 and mAP (COCO, the
validation split) and its whole time. A finished run folder is read, not run again.
"""

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time


def write_folder(path, size, scales, train, val, seed):
    from keras_mbv3.recipes import data, detection_data

    arrays = detection_data.digits_detection(size, train, val, seed=seed, scales=tuple(scales))
    detection_data.write_coco_folder(path, *arrays, data.DIGIT_NAMES)


def run(name, flags, work, data):
    out = os.path.join(work, name)
    command = [sys.executable, "-m", "keras_mbv3", "recipe", "--task", "detection", "--data", data, "--out", out,
               *shlex.split(flags)]  # fmt: skip
    if not os.path.exists(os.path.join(out, "eval.json")):
        start = time.time()
        with open(os.path.join(work, f"{name}.log"), "w") as log:
            subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
        with open(os.path.join(work, f"{name}.time"), "w") as f:
            f.write(f"{time.time() - start:.0f}")
    return row(name, out, data, float(open(os.path.join(work, f"{name}.time")).read()))


def row(name, out, data, seconds):
    settings = json.load(open(os.path.join(out, "settings.json")))
    found = json.load(open(os.path.join(out, "eval.json")))
    scores = {kind: found[os.path.join(out, f"{kind}.tflite")] for kind in ("float", "int8")}
    train_images = len(json.load(open(os.path.join(data, "train", "annotations.json")))["images"])
    steps = settings["epochs"] * math.ceil(train_images / settings["batch_size"])
    return (f"| {name} | {settings['image_size']} | {settings.get('min_stride', 16)} | {steps} | {scores['float']['map50']:.3f} | "
            f"{scores['int8']['map50']:.3f} | {scores['float']['map']:.3f} | {scores['int8']['map']:.3f} | "
            f"{seconds:.0f} |")  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--scales", type=float, nargs=2, default=(0.15, 0.45))
    parser.add_argument("--train", type=int, default=800)
    parser.add_argument("--val", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", nargs=2, action="append", default=[], metavar=("NAME", "FLAGS"))
    args = parser.parse_args()
    data = os.path.join(os.path.abspath(args.work), "data")
    if not os.path.exists(data):
        write_folder(data, args.size, args.scales, args.train, args.val, args.seed)
    print("| run | image size | min stride | steps | mAP@.5 float | mAP@.5 int8 | mAP float | mAP int8 | time (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, flags in args.run:
        print(run(name, flags, os.path.abspath(args.work), data), flush=True)


if __name__ == "__main__":
    main()
