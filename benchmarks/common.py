"""Shared set-up of the benchmarks: one thread, results folder, Markdown tables."""

import os
import platform

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def single_thread():
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_result(name, title, body):
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, name)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, TF {tf.__version__}"
    with open(path, "w") as f:
        f.write(f"# {title}\n\n{machine}\n\n{body}\n")
    return path
