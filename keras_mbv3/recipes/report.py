"""The run report: ``report.json``, ``report.md`` and ``report.png`` (matplotlib)."""

import json
import os

from keras_mbv3.quantization.export import write_atomically


def write(report, histories, out):
    """Write the three report files of ``report`` (``float``/``int8`` results, settings, ...) into ``out``."""
    write_atomically(json.dumps(report, indent=2).encode(), os.path.join(out, "report.json"), overwrite=True)
    write_atomically(markdown(report).encode(), os.path.join(out, "report.md"), overwrite=True)
    write_atomically(plot(report, histories), os.path.join(out, "report.png"), overwrite=True)


def _metric(report):
    return "miou" if "miou" in report["float"] else "accuracy"


def markdown(report):
    f, q, s = report["float"], report["int8"], report["settings"]
    metric = _metric(report)
    timings = report.get("timings_s", {})
    return (
        f"# mbv3 recipe: {s['model']} on {s['data']} ({s['image_size']}px, {s['task']})\n\n"
        f"| | {metric} | LiteRT latency (1 thread) | file size |\n|---|---|---|---|\n"
        f"| float32 | {f[metric]:.2%} | {f['latency_ms']:.3f} ms | {f['size_bytes']:,} B |\n"
        f"| int8 (QAT) | {q[metric]:.2%} | {q['latency_ms']:.3f} ms | {q['size_bytes']:,} B |\n"
        f"| int8 / float | {q[metric] - f[metric]:+.2%} | {q['latency_ms'] / f['latency_ms']:.2f}x | "
        f"{q['size_bytes'] / f['size_bytes']:.2f}x |\n\n"
        f"Validation images: {report['validation_images']}. Step times (s): "
        + (", ".join(f"{k} {v:.0f}" for k, v in timings.items()) or "-")
        + "\n"
    )


def plot(report, histories):
    """PNG bytes: metric and latency, float vs int8, and the training curves (float, then QAT)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    metric = _metric(report)
    figure, (left, middle, right) = pyplot.subplots(1, 3, figsize=(13, 3.8))
    kinds = ["float", "int8"]
    left.bar(kinds, [report[k][metric] for k in kinds], color=["tab:blue", "tab:orange"])
    left.set_title(f"validation {metric}")
    left.set_ylim(0, 1)
    middle.bar(kinds, [report[k]["latency_ms"] for k in kinds], color=["tab:blue", "tab:orange"])
    middle.set_title("LiteRT latency, 1 thread (ms)")
    offset = 0
    for name, history in histories.items():
        values = history.get("val_accuracy", [])
        epochs = range(offset + 1, offset + len(values) + 1)
        right.plot(epochs, values, marker="o", label=f"{name} val accuracy")
        right.plot(epochs, history.get("accuracy", []), linestyle="--", label=f"{name} train accuracy")
        offset += len(values)
    right.set_title("training curves")
    right.set_xlabel("epoch")
    right.legend(fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    pyplot.close(figure)
    return buffer.getvalue()
