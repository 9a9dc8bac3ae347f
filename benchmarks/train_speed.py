"""Train step times on TensorFlow, JAX and PyTorch, in one run: keras.applications' MobileNetV3Small, ours, ours QAT.

MobileNetV3Small at 224x224, batch 32, ``train_on_batch`` on random images, the
compile settings of the recipe (Keras' default ``jit_compile``: XLA on JAX; on
TensorFlow only where it has a GPU, so here TensorFlow's graph without XLA;
eager on PyTorch). One worker process per backend (one process has one
backend), each pinned to the same single core with one thread (on JAX with freed
memory retained, as ``mbv3`` does: ``keras_mbv3/host_memory.py``); all compile first,
then the workers alternate for
``--rounds`` rounds, and in each a worker times its three models' steps
interleaved. Prints the medians and the ratios (QAT / float also as the median
of each QAT step over the float step just before it), and writes
``benchmarks/results/train_speed.md``.

Targets (issue 22): ours on JAX (and PyTorch) within 1.1x of keras.applications'
on the same backend; QAT at most 1.1x float on each backend.

    python benchmarks/train_speed.py [--rounds 3] [--steps 3] [--size 224] [--batch 32] [--backends tensorflow,jax,torch]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = ("keras.applications", "ours", "ours QAT")


def worker(steps, batch, size, retain_memory):
    """Compile the three models, print READY, then time ``steps`` steps of each per line read; print the times (and
    the round's minor page faults, and the process's peak resident memory)."""
    if retain_memory:  # first, before the backend starts its threads
        from keras_mbv3.host_memory import retain_freed_memory

        if not retain_freed_memory():
            raise RuntimeError("--retain-memory: glibc did not take the malloc settings (or this is not glibc)")
    import resource
    import time

    import numpy as np

    from keras_mbv3 import keras
    from keras_mbv3.applications import MobileNetV3Small
    from keras_mbv3.quantization import quantize_model

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 1000, batch), 1000)
    ours = MobileNetV3Small(weights=None, input_shape=(size, size, 3))
    models = {
        "keras.applications": keras.applications.MobileNetV3Small(weights=None, input_shape=(size, size, 3)),
        "ours": ours,
        "ours QAT": quantize_model(ours, representative_dataset=x[:8]),
    }
    for model in models.values():
        model.compile(keras.optimizers.Adam(1e-5), "categorical_crossentropy")
        model.train_on_batch(x, y)  # compile
        model.train_on_batch(x, y)
    print("READY", flush=True)
    for _ in sys.stdin:
        times = {name: [] for name in models}
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(steps):
            for name, model in models.items():
                start = time.perf_counter()
                model.train_on_batch(x, y)
                times[name].append(time.perf_counter() - start)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        times["minor page faults"], times["peak MB"] = usage.ru_minflt - faults, usage.ru_maxrss / 1024
        print("RESULT " + json.dumps(times), flush=True)


def start_worker(backend, steps, batch, size, retain_memory=None):
    """A worker process on ``backend``; ``retain_memory`` (default: on JAX, as ``mbv3`` does) keeps freed memory."""
    retain_memory = backend == "jax" if retain_memory is None else retain_memory
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_USE_LEGACY_KERAS": "0", "TF_CPP_MIN_LOG_LEVEL": "3",
           "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false", "OMP_NUM_THREADS": "1"}  # fmt: skip
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--steps", str(steps), "--batch", str(batch),
               "--size", str(size)] + ["--retain-memory"] * retain_memory  # fmt: skip
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                               preexec_fn=lambda: os.sched_setaffinity(0, {0}))  # fmt: skip
    for line in process.stdout:
        if line.startswith("READY"):
            return process
    raise RuntimeError(f"the {backend} worker ended before it was ready (exit code {process.wait()})")


def one_round(process):
    process.stdin.write("go\n")
    process.stdin.flush()
    for line in process.stdout:
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"a worker ended (exit code {process.wait()})")


def run_rounds(workers, rounds):
    """Alternate ``workers`` ({name: process}) for ``rounds`` rounds, printing each round's medians, then end them.

    Returns {name: [each round's result]}; a result maps each model to its step times, and "minor page faults"
    (the round's) and "peak MB" (the process's so far) to numbers.
    """
    results = {name: [] for name in workers}
    for round_ in range(rounds):
        for name, process in workers.items():
            result = one_round(process)
            results[name].append(result)
            print(f"round {round_ + 1}/{rounds} {name}: " + ", ".join(
                f"{model} {statistics.median(result[model]):.3f} s" for model in MODELS), flush=True)  # fmt: skip
    for process in workers.values():
        process.stdin.close()
        process.wait()
    return results


def pooled_steps(results):
    """{name: {model: every step time of every round}} of ``run_rounds``' results."""
    return {name: {model: [t for result in rounds for t in result[model]] for model in MODELS}
            for name, rounds in results.items()}  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--backends", default="tensorflow,jax,torch", help="comma-separated; tensorflow first")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--retain-memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.steps, args.batch, args.size, args.retain_memory)
    workers = {}
    for backend in args.backends.split(","):  # one after the other: compilation is timed by nobody
        print(f"compiling on {backend} ...", flush=True)
        workers[backend] = start_worker(backend, args.steps, args.batch, args.size)
    samples = pooled_steps(run_rounds(workers, args.rounds))
    sys.path.insert(0, HERE)
    from common import markdown_table, write_result

    medians = {b: {name: statistics.median(s[name]) for name in MODELS} for b, s in samples.items()}
    paired = {b: statistics.median(q / f for q, f in zip(s["ours QAT"], s["ours"])) for b, s in samples.items()}
    rows = [[backend, *(f"{m[name]:.3f}" for name in MODELS), f"{m['ours'] / m['keras.applications']:.2f}",
             f"{m['ours QAT'] / m['ours']:.2f}", f"{paired[backend]:.2f}"] for backend, m in medians.items()]  # fmt: skip
    rows += [[f"{b} / tensorflow", *(f"{medians[b][n] / medians['tensorflow'][n]:.2f}x" for n in MODELS), "", "", ""]
             for b in medians if b != "tensorflow" and "tensorflow" in medians]  # fmt: skip
    header = ["backend", *(f"{name} step (s)" for name in MODELS), "ours / keras.applications", "QAT / float",
              "QAT / float, paired"]  # fmt: skip
    body = markdown_table(header, rows)
    body += (f"\n\nMobileNetV3Small {args.size}x{args.size}, batch {args.batch}, train_on_batch, one core "
             f"(sched_setaffinity, one XLA thread; JAX with freed memory retained), medians of {args.rounds} x "
             f"{args.steps} steps, backends "
             "alternating, models interleaved. Paired: the median of each QAT step's time over the float step just "
             "before it (this machine's speed drifts by up to 30% within a minute; a pair is 10 s apart at most).")  # fmt: skip
    print(body)
    print("written to", write_result("train_speed.md", "Train step time on each backend", body))


if __name__ == "__main__":
    main()
