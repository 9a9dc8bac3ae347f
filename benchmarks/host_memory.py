"""JAX train steps with glibc's default malloc against freed memory retained (``keras_mbv3/host_memory.py``).

Two JAX workers of ``train_speed.py`` (keras.applications' MobileNetV3Small,
ours, ours QAT; 224x224, batch 32, one core, one XLA thread), one with
``retain_freed_memory()`` called first, alternating for ``--rounds`` rounds.
Prints each model's median step, the ratio retained / default, each worker's
QAT / float, the minor page faults per step and the peak resident memory, and writes
``benchmarks/results/host_memory.md``.

    python benchmarks/host_memory.py [--rounds 4] [--steps 3] [--size 224] [--batch 32]
"""

import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from train_speed import MODELS, pooled_steps, run_rounds, start_worker  # noqa: E402

WORKERS = {"default malloc": False, "freed memory retained": True}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    workers = {}
    for name, retain in WORKERS.items():
        print(f"compiling ({name}) ...", flush=True)
        workers[name] = start_worker("jax", args.steps, args.batch, args.size, retain_memory=retain)
    results = run_rounds(workers, args.rounds)
    samples = pooled_steps(results)
    faults = {name: [r["minor page faults"] / (args.steps * len(MODELS)) for r in rounds]
              for name, rounds in results.items()}  # fmt: skip
    peak = {name: rounds[-1]["peak MB"] for name, rounds in results.items()}
    from common import markdown_table, write_result

    medians = {name: {model: statistics.median(s[model]) for model in MODELS} for name, s in samples.items()}
    rows = [[name, *(f"{m[model]:.3f}" for model in MODELS), f"{m['ours QAT'] / m['ours']:.2f}",
             f"{statistics.median(faults[name]):,.0f}", f"{peak[name]:,.0f}"] for name, m in medians.items()]  # fmt: skip
    default, retained = medians["default malloc"], medians["freed memory retained"]
    rows.append(["retained / default", *(f"{retained[model] / default[model]:.2f}" for model in MODELS), "", "",
                 f"{peak['freed memory retained'] / peak['default malloc']:.2f}"])  # fmt: skip
    header = ["JAX worker", *(f"{model} step (s)" for model in MODELS), "QAT / float", "minor page faults per step",
              "peak resident MB"]  # fmt: skip
    body = markdown_table(header, rows)
    body += (f"\n\nMobileNetV3Small {args.size}x{args.size}, batch {args.batch}, train_on_batch, one core, one XLA "
             f"thread, medians of {args.rounds} x {args.steps} steps, the two workers alternating, models "
             "interleaved.")  # fmt: skip
    print(body)
    print("written to", write_result("host_memory.md", "JAX train steps: default malloc against freed memory retained",
                                     body))  # fmt: skip


if __name__ == "__main__":
    main()
