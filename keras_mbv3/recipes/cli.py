"""The ``mbv3`` command line (also ``python -m keras_mbv3``)."""

import argparse
import os
import sys

EXAMPLE = "example: mbv3 recipe --data digits --model small --out runs/demo"


def parser():
    main = argparse.ArgumentParser(prog="mbv3", description="MobileNetV3 training, QAT and int8 export.",
                                   epilog=EXAMPLE)  # fmt: skip
    commands = main.add_subparsers(dest="command", required=True)
    recipe = commands.add_parser(
        "recipe", help="train float, fine-tune with QAT, export int8, evaluate, benchmark, report",
        epilog=EXAMPLE + " --epochs 20 --qat-epochs 3",
    )  # fmt: skip
    recipe.add_argument("--data", default="digits", help="data set: digits (embedded, the default)")
    recipe.add_argument("--model", default="small", help="small, large, small-minimalistic or large-minimalistic")
    recipe.add_argument("--alpha", type=float, default=1.0, help="width multiplier (default 1.0)")
    recipe.add_argument("--out", required=True, help="run folder; rerun with the same folder to resume")
    recipe.add_argument("--epochs", type=int, default=20, help="float training epochs (default 20)")
    recipe.add_argument("--qat-epochs", type=int, default=3, help="QAT fine-tuning epochs (default 3)")
    recipe.add_argument("--image-size", type=int, default=32, help="input size in pixels, >= 32 (default 32)")
    recipe.add_argument("--batch-size", type=int, default=64)
    recipe.add_argument("--seed", type=int, default=0)
    return main


def main(argv=None):
    args = parser().parse_args(argv)
    # tfmot's QAT needs tf_keras; choose it before TensorFlow is imported, unless the user chose.
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from keras_mbv3.recipes import recipe

    try:
        report = recipe.run(args.data, args.model, args.out, args.alpha, args.epochs, args.qat_epochs,
                            args.image_size, args.batch_size, args.seed)  # fmt: skip
    except (ValueError, TypeError, FileExistsError, RuntimeError) as error:
        print(f"mbv3: error: {error}", file=sys.stderr)
        return 2
    print(open(os.path.join(args.out, "report.md")).read())
    print(f"report: {os.path.join(args.out, 'report.json')} and report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
