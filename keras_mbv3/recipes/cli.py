"""The ``mbv3`` command line (also ``python -m keras_mbv3``): train, qat, export, eval, bench, recipe."""

import argparse
import json
import os
import sys

COMMANDS = {
    "train": ("train a float model into RUN_DIR/float.keras",
              "mbv3 train --data digits --model small --out runs/demo --epochs 20"),
    "qat": ("fine-tune RUN_DIR/float.keras with quantization-aware training into RUN_DIR/qat.keras",
            "mbv3 qat --data digits --out runs/demo --qat-epochs 3"),
    "export": ("export RUN_DIR/float.tflite (float32) and RUN_DIR/int8.tflite (fully int8)",
               "mbv3 export --out runs/demo"),
    "eval": ("accuracy (or mIoU) of a .keras/.h5/.tflite model on the validation data",
             "mbv3 eval --data digits --out runs/demo [--file runs/demo/int8.tflite]"),
    "bench": ("LiteRT latency of .tflite models (interleaved rounds, medians)",
              "mbv3 bench --out runs/demo --threads 1 [--file model.tflite]"),
    "recipe": ("train, qat, export, eval and bench in order, then report.json/.md/.png",
               "mbv3 recipe --data digits --model small --out runs/demo --epochs 20 --qat-epochs 3"),
}  # fmt: skip
# The flag groups each command takes (same names everywhere).
USES = {
    "train": ("data", "model", "train"),
    "qat": ("data", "qat"),
    "export": (),
    "eval": ("data", "file"),
    "bench": ("file", "bench"),
    "recipe": ("data", "model", "train", "qat", "bench"),
}


def _add_flags(command, groups):
    command.add_argument("--out", required=True, help="run folder; rerun with the same folder to resume")
    if "data" in groups:
        command.add_argument("--data", help="digits (default), digits-seg, tfds:NAME or a folder (see README)")
        command.add_argument("--task", default="classification", help="classification (default) or segmentation")
        command.add_argument("--data-dir", help="TensorFlow Datasets folder for tfds:NAME")
        command.add_argument("--image-size", type=int, default=32, help="input side in pixels, >= 32 (default 32)")
        command.add_argument("--batch-size", type=int, default=64, help="default 64")
        command.add_argument("--seed", type=int, default=0, help="default 0")
    if "model" in groups:
        command.add_argument("--model", default="small", help="small, large, small-minimalistic or large-minimalistic")
        command.add_argument("--alpha", type=float, default=1.0, help="width multiplier (default 1.0)")
        command.add_argument("--weights", help="initial backbone weights: imagenet or a file (default: from scratch)")
    if "train" in groups:
        command.add_argument("--epochs", type=int, default=20, help="float training epochs (default 20)")
    if "qat" in groups:
        command.add_argument("--qat-epochs", type=int, default=3, help="QAT fine-tuning epochs (default 3)")
    if "train" in groups or "qat" in groups:
        command.add_argument("--strategy", default="default", help="default, mirrored or multi-worker (TF_CONFIG)")
        command.add_argument("--cpu-devices", type=int, default=1, help="logical CPU devices for mirrored (default 1)")
    if "file" in groups:
        command.add_argument("--file", help="a model file instead of the run's float.tflite and int8.tflite")
    if "bench" in groups:
        command.add_argument("--threads", type=int, default=1, help="LiteRT threads (default 1)")


def parser():
    main = argparse.ArgumentParser(prog="mbv3", description="MobileNetV3 training, QAT and int8 export.",
                                   epilog="example: " + COMMANDS["recipe"][1])  # fmt: skip
    commands = main.add_subparsers(dest="command", required=True)
    for name, (summary, example) in COMMANDS.items():
        command = commands.add_parser(name, help=summary, description=summary, epilog="example: " + example)
        _add_flags(command, USES[name])
    return main


def _settings(args):
    names = ("data", "task", "data_dir", "image_size", "batch_size", "seed", "model", "alpha", "weights", "epochs",
             "qat_epochs")  # fmt: skip
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def _files(args):
    return {os.path.basename(args.file): args.file} if getattr(args, "file", None) else None


def execute(args):
    from keras_mbv3.recipes import recipe, training

    distribution = None
    if hasattr(args, "strategy"):
        distribution = training.strategy(args.strategy, args.cpu_devices)
        print(f"strategy: {args.strategy}, {distribution.num_replicas_in_sync} replica(s)")
    if args.command == "recipe":
        report = recipe.run(args.out, distribution=distribution, threads=args.threads, **_settings(args))
        print(open(os.path.join(args.out, "report.md")).read())
        print(f"report: {os.path.join(args.out, 'report.json')}, report.md and report.png")
        return report
    run = recipe.Run(args.out, distribution=distribution, **_settings(args))
    if args.command == "train":
        run.train()
    elif args.command == "qat":
        run.qat()
    elif args.command == "export":
        run.export()
        print(f"wrote {run.paths['float_tflite']} and {run.paths['int8_tflite']}")
    elif args.command == "eval":
        print(json.dumps(run.evaluate(_files(args)), indent=2))
    elif args.command == "bench":
        latency = run.bench(_files(args), threads=args.threads)
        print(json.dumps({name: {"latency_ms": round(ms, 4)} for name, ms in latency.items()}, indent=2))


def main(argv=None):
    args = parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Keras 3 unless the user set TF_USE_LEGACY_KERAS=1
    try:
        execute(args)
    except (ValueError, TypeError, OSError, RuntimeError) as error:
        print(f"mbv3: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
