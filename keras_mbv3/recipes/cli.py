"""The ``mbv3`` command line (also ``python -m keras_mbv3``): train, import, adapt, qat, export, eval, bench, recipe."""

import argparse
import json
import os
import sys

from keras_mbv3.recipes.settings import ADAPT_DEFAULTS, SETTINGS, TYPES, flag, help_text

COMMANDS = {
    "train": ("train a float model into RUN_DIR/float.keras",
              "mbv3 train --data digits --model small --out runs/demo [--epochs 131]"),
    "qat": ("fine-tune RUN_DIR/float.keras with quantization-aware training into RUN_DIR/qat.keras",
            "mbv3 qat --out runs/demo --qat-epochs 3 (the run's data and settings)"),
    "export": ("export RUN_DIR/float.tflite (float32) and RUN_DIR/int8.tflite (fully int8), or with --ptq "
               "RUN_DIR/int8_ptq.tflite (post-training int8 of the float model, no QAT)",
               "mbv3 export --out runs/demo [--ptq] [--overwrite]"),
    "eval": ("accuracy (or mIoU) of the run's .tflite files, or of model files (.keras/.h5/.tflite), on validation data",
             "mbv3 eval --out runs/demo  or  mbv3 eval model.tflite --data digits"),
    "bench": ("LiteRT latency of the run's .tflite files (into RUN_DIR/bench.json) or of .tflite files "
              "(interleaved rounds, medians)", "mbv3 bench --out runs/demo  or  mbv3 bench a.tflite b.tflite --threads 1"),
    "predict": ("top-k classes of a model file on images, with the names in its metadata (segmentation: overlay PNGs)",
                "mbv3 predict --file runs/demo/int8.tflite photo.jpg [more.png ...] [--json]"),
    "adapt": ("NetAdapt: cut RUN_DIR/float.keras's widths to an int8 latency target into RUN_DIR/adapted.keras, "
              "which qat and export then take", "mbv3 adapt --out runs/demo --target-ratio 0.7"),
    "import": ("take your own model file (.keras, or a whole-model .h5) as RUN_DIR/float.keras, checked against the "
               "data; qat, export (--ptq), eval, bench and recipe then work as on a trained run",
               "mbv3 import my_model.keras --data ~/data/flowers --out runs/mine [--overwrite]"),
    "recipe": ("train, qat, export, eval and bench in order, then report.json/.md/.png",
               "mbv3 recipe --data digits --model small --out runs/demo [--epochs 131] [--qat-epochs 3]"),
}  # fmt: skip
# The flag groups each command takes (same names everywhere).
USES = {
    "train": ("data", "model", "train"),
    "qat": ("data", "qat"),
    "export": ("export",),
    "eval": ("data", "file"),
    "bench": ("file", "bench"),
    "predict": ("predict",),
    "adapt": ("adapt",),
    "import": ("data", "import"),
    "recipe": ("data", "model", "train", "qat", "bench"),
}


def _add_flags(command, groups):
    """The flags of ``groups``; a setting's flag defaults to None (not given: the run's value, else the default)."""
    if "predict" in groups:
        command.add_argument("images", nargs="+", metavar="IMAGE", help="PNG, JPEG, GIF or BMP files")
        command.add_argument("--file", required=True, help="a model file (.tflite, .keras or .h5)")
        command.add_argument("--top-k", type=int, default=5, help="classes to show per image (default: %(default)s)")
        command.add_argument("--json", action="store_true", help="print the results as JSON")
        command.add_argument("--overlays", default="overlays",
                             help="folder for the overlay PNGs of a segmentation or detection model (default: %(default)s)")  # fmt: skip
        command.add_argument("--overwrite", action="store_true", help="replace overlay PNGs already there")
        return
    optional = "file" in groups  # eval and bench also take model files without a run folder
    command.add_argument("--out", required=not optional, help="run folder; rerun with the same folder to resume"
                         + ("; optional with model files" if optional else ""))  # fmt: skip
    names = {
        "data": ("data", "task", "data_dir", "image_size", "batch_size", "seed", "min_stride"),
        "model": ("model", "alpha", "weights"),
        "train": ("epochs",),
        "qat": ("qat_epochs",),
    }
    for group in groups:
        for name in names.get(group, ()):
            command.add_argument(flag(name), type=TYPES[name], help=help_text(name))
    if "train" in groups or "qat" in groups:
        command.add_argument("--strategy", default="default", help="default, mirrored or multi-worker (TF_CONFIG) "
                             "on TensorFlow; data-parallel on JAX (keras.distribution) (default: %(default)s)")  # fmt: skip
        command.add_argument("--cpu-devices", type=int, default=1,
                             help="logical CPU devices for mirrored or data-parallel (default: %(default)s)")  # fmt: skip
        command.add_argument("--num-processes", type=int, help="processes of a data-parallel run on JAX "
                             "(default: KERAS_DISTRIBUTION_NUM_PROCESSES, else 1)")  # fmt: skip
        command.add_argument("--process-id", type=int, help="this process's index, 0 the chief "
                             "(default: KERAS_DISTRIBUTION_PROCESS_ID, else 0)")  # fmt: skip
        command.add_argument("--coordinator", help="HOST:PORT of process 0 "
                             "(default: KERAS_DISTRIBUTION_JOB_ADDRESSES)")  # fmt: skip
    if "file" in groups:
        command.add_argument("files", nargs="*", metavar="FILE", help="model files (.tflite; .keras and .h5 for eval) "
                             "instead of the run's float.tflite and int8.tflite")  # fmt: skip
        command.add_argument("--file", help="a model file (the same as FILE)")
    if "bench" in groups:
        command.add_argument("--threads", type=int, default=1, help="LiteRT threads (default: %(default)s)")
    if "adapt" in groups:
        defaults = argparse.Namespace(**ADAPT_DEFAULTS)
        command.add_argument("--target-ratio", type=float, help="target int8 latency as a fraction of the trained "
                             "model's, e.g. 0.7")  # fmt: skip
        command.add_argument("--target-ms", type=float, help="target int8 latency in ms (instead of --target-ratio)")
        command.add_argument("--step-fraction", type=float, default=defaults.step_fraction,
                             help="latency each cut saves at least, as a fraction (default: %(default)s)")  # fmt: skip
        command.add_argument("--proposal-steps", type=int, default=defaults.proposal_steps,
                             help="training steps that fine-tune each proposal (default: %(default)s)")  # fmt: skip
        command.add_argument("--finetune-epochs", type=int, default=defaults.finetune_epochs,
                             help="epochs that fine-tune the adapted model (default: %(default)s)")  # fmt: skip
        command.add_argument("--threads", type=int, default=defaults.threads,
                             help="LiteRT threads of the latency measurements (default: %(default)s)")  # fmt: skip
        command.add_argument("--max-iterations", type=int, default=defaults.max_iterations,
                             help="stop the search after N iterations (default: none)")  # fmt: skip
        command.add_argument("--time-budget", type=float, default=defaults.time_budget, metavar="MIN",
                             help="stop the search before an iteration that would end after MIN minutes (the "
                             "calibration and the start's score count; the final fine-tune comes after; default: "
                             "none)")  # fmt: skip
        command.add_argument("--max-accuracy-drop", type=float, default=defaults.max_accuracy_drop,
                             help="a search stopped short keeps its fastest model whose holdout accuracy is at most "
                             "this much under the start's (a fraction; default: %(default)s)")  # fmt: skip
    if "export" in groups:
        command.add_argument("--overwrite", action="store_true",
                             help="export again over the run's float.tflite and int8.tflite")  # fmt: skip
        command.add_argument("--ptq", action="store_true", help="post-training int8 of the float model into "
                             "int8_ptq.tflite (ranges calibrated on training images; no QAT needed)")  # fmt: skip
    if "import" in groups:
        command.add_argument("model_file", metavar="MODEL", help="a whole Keras model: .keras, or .h5")
        command.add_argument("--overwrite", action="store_true", help="replace the run's float.keras")


def parser():
    main = argparse.ArgumentParser(prog="mbv3", description="MobileNetV3 training, QAT and int8 export.",
                                   epilog="example: " + COMMANDS["recipe"][1])  # fmt: skip
    commands = main.add_subparsers(dest="command", required=True)
    for name, (summary, example) in COMMANDS.items():
        command = commands.add_parser(name, help=summary, description=summary, epilog="example: " + example)
        _add_flags(command, USES[name])
    return main


def _settings(args):
    """The settings given as flags (the others come from the run folder or the defaults)."""
    return {name: getattr(args, name) for name in SETTINGS if getattr(args, name, None) is not None}


def _files(args):
    """``{name: path}`` of the model files given (FILE... and --file), or None for the run's own."""
    paths = list(getattr(args, "files", None) or []) + ([args.file] if getattr(args, "file", None) else [])
    if not paths and args.out is None:
        raise ValueError(f"Invalid `--out`: received --out=None; allowed: a run folder, or model files (mbv3 {args.command} "
                         "FILE ...).")  # fmt: skip
    return {os.path.basename(p) if list(map(os.path.basename, paths)).count(os.path.basename(p)) == 1 else p: p
            for p in paths} or None  # fmt: skip


def execute(args):
    from keras_mbv3 import checks
    from keras_mbv3.recipes import recipe, training

    if args.command == "predict":
        from keras_mbv3.recipes import predict

        task, results = predict.predict_files(args.file, args.images, args.top_k, args.overlays, args.overwrite)
        print(json.dumps(results, indent=2) if args.json else "\n".join(predict.describe(results, task)))
        return results
    distribution = None
    if hasattr(args, "strategy"):
        cluster = training.cluster_of(args.coordinator, args.num_processes, args.process_id,
                                      environment=args.strategy == "data-parallel")  # fmt: skip
        if args.command == "recipe" and cluster[1] > 1:  # export, eval and bench run in one process, untied
            checks.fail("--num-processes", cluster[1], "1 for recipe; over several processes run `mbv3 train` and "
                        "`mbv3 qat` on each, then `mbv3 export`, `eval` and `bench` on one")  # fmt: skip
        distribution = training.strategy(args.strategy, args.cpu_devices, cluster)
        print(f"strategy: {args.strategy}, {distribution.num_replicas_in_sync} replica(s)")
    if args.command == "recipe":
        report = recipe.run(args.out, distribution=distribution, threads=args.threads, **_settings(args))
        if report is None:
            print("trained; the chief exports, evaluates and reports")
            return None
        print(open(os.path.join(args.out, "report.md")).read())
        print(f"report: {os.path.join(args.out, 'report.json')}, report.md and report.png")
        return report
    settings = _settings(args)
    if args.command == "eval" and args.out is None:  # model files alone: their task and input size, unless given
        from keras_mbv3.recipes import evaluation

        settings = {**evaluation.settings_of_files(_files(args).values()), **settings}
    if args.command == "import":  # the model file's task and input size, unless given
        from keras_mbv3.recipes import evaluation

        settings = {**evaluation.settings_of_files([args.model_file], "MODEL"), **settings}
    run = recipe.Run(args.out, distribution=distribution, **settings)
    if args.command == "train":
        run.train()
    elif args.command == "qat":
        run.qat()
    elif args.command == "adapt":
        run.adapt(target_ratio=args.target_ratio, target_ms=args.target_ms, step_fraction=args.step_fraction,
                  proposal_steps=args.proposal_steps, finetune_epochs=args.finetune_epochs, threads=args.threads,
                  max_iterations=args.max_iterations, time_budget=args.time_budget,
                  max_accuracy_drop=args.max_accuracy_drop)
    elif args.command == "export":
        run.export(overwrite=args.overwrite, ptq=args.ptq)
    elif args.command == "import":
        run.import_model(args.model_file, overwrite=args.overwrite)
    elif args.command == "eval":
        print(json.dumps(run.evaluate(_files(args)), indent=2))
    elif args.command == "bench":
        latency = run.bench(_files(args), threads=args.threads)
        print(json.dumps({name: {"latency_ms": round(ms, 4)} for name, ms in latency.items()}, indent=2))


def retain_freed_memory_on_jax():
    """On JAX, have glibc keep the memory a step frees: each train step of Small at 224 faults in 1.0-1.4 GB again
    otherwise (``keras_mbv3/host_memory.py``). Before the first computation, when XLA starts its threads."""
    from keras_mbv3.backend import IS_KERAS_3, keras

    if IS_KERAS_3 and keras.backend.backend() == "jax":
        from keras_mbv3 import host_memory

        host_memory.retain_freed_memory()


def main(argv=None):
    args = parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Keras 3 unless the user set TF_USE_LEGACY_KERAS=1
    retain_freed_memory_on_jax()
    try:
        from keras_mbv3.quantization.tensorflow_worker import shared_worker

        with shared_worker():  # on JAX or PyTorch, a command's exports start TensorFlow once
            execute(args)
    except (ValueError, TypeError, OSError, RuntimeError) as error:
        print(f"mbv3: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
