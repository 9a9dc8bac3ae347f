"""Training length against accuracy on one data set (issue 24: the length rule of every task), whole recipes.

    python benchmarks/training_length.py WORK --task classification --data DATA [--run NAME "FLAGS" ...]

Each ``--run NAME "FLAGS"`` is ``mbv3 recipe --task TASK --data DATA --out WORK/NAME FLAGS`` in its own process,
one after another (train, QAT, export, eval, bench); the table gives its epochs and training steps, the
task's metric of the float and int8 ``.tflite`` files (accuracy, mIoU, or COCO mAP@.5 and mAP) on the validation
split and its whole time. A finished run folder is read, not run again. ``benchmarks/shapes_folder.py`` makes a
classification folder; ``benchmarks/detection_small_data.py`` makes detection folders.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

METRICS = {"classification": ("accuracy",), "segmentation": ("miou",), "detection": ("map50", "map")}


def run(name, flags, work, task, data):
    """The table row of ``mbv3 recipe --task task --data data --out work/name flags`` (run unless done before)."""
    out = os.path.join(work, name)
    command = [sys.executable, "-m", "keras_mbv3", "recipe", "--task", task, "--data", data, "--out", out,
               *shlex.split(flags)]  # fmt: skip
    if not os.path.exists(os.path.join(out, "eval.json")):
        start = time.time()
        with open(os.path.join(work, f"{name}.log"), "w") as log:
            subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
        with open(os.path.join(work, f"{name}.time"), "w") as f:
            f.write(f"{time.time() - start:.0f}")
    return row(name, out, task, float(open(os.path.join(work, f"{name}.time")).read()))


def row(name, out, task, seconds):
    from keras_mbv3.recipes import data as data_lib
    from keras_mbv3.recipes import tasks

    settings = json.load(open(os.path.join(out, "settings.json")))
    found = json.load(open(os.path.join(out, "eval.json")))
    scores = {kind: found[os.path.join(out, f"{kind}.tflite")] for kind in ("float", "int8")}
    options = tasks.options_of(task, settings)
    loaded = tasks.load(settings["data"], task, settings["image_size"], settings["batch_size"], settings["data_dir"],
                        settings["seed"], **options)  # fmt: skip
    steps = settings["epochs"] * data_lib.steps_per_epoch(loaded.train_size, settings["batch_size"])
    values = " | ".join(f"{scores['float'][m]:.4f} / {scores['int8'][m]:.4f}" for m in METRICS[task])
    described = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in options.items())
    return (f"| {name} | {loaded.train_size:,} | {settings['image_size']}{', ' + described if described else ''} | "
            f"{settings['epochs']} | {steps:,} | {values} | {seconds:.0f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work")
    parser.add_argument("--task", default="classification", choices=tuple(METRICS))
    parser.add_argument("--data", required=True, help="a --data value: an embedded set, a folder or tfds:NAME")
    parser.add_argument("--run", nargs=2, action="append", default=[], metavar=("NAME", "FLAGS"))
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    data = args.data if os.path.sep not in args.data else os.path.abspath(args.data)
    table(args.task, data, args.run, os.path.abspath(args.work))


def table(task, data, runs, work):
    """Print the table of ``runs`` (``(name, flags)`` pairs), a row as each run ends."""
    metrics = " | ".join(f"{m} float / int8" for m in METRICS[task])
    print(f"| run | training images | image size | epochs | steps | {metrics} | time (s) |")
    print("|---|---|---|---|---|" + "---|" * len(METRICS[task]) + "---|")
    for name, flags in runs:
        print(run(name, flags, work, task, data), flush=True)


if __name__ == "__main__":
    main()
