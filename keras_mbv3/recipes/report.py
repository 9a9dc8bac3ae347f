"""The run report: ``report.json``, ``report.md`` and ``report.png`` (matplotlib)."""

import json
import os

from keras_mbv3.files import write_atomically
from keras_mbv3.recipes import tasks


def write(report, histories, out):
    """Write the three report files of ``report`` (``float``/``int8`` results, settings, ...) into ``out``."""
    write_atomically(json.dumps(report, indent=2).encode(), os.path.join(out, "report.json"), overwrite=True)
    write_atomically(markdown(report).encode(), os.path.join(out, "report.md"), overwrite=True)
    write_atomically(plot(report, histories), os.path.join(out, "report.png"), overwrite=True)


def _metric(report):
    return tasks.get(report["settings"]["task"]).METRIC


ROWS = (("int8", "int8 (QAT)", "int8 / float"), ("int8_ptq", "int8 (post-training)", "int8 (post-training) / float"))


def markdown(report):
    f, s = report["float"], report["settings"]
    metric = _metric(report)
    timings = report.get("timings_s", {})
    rows = [f"| float32 | {f[metric]:.2%} | {f['latency_ms']:.3f} ms | {f['size_bytes']:,} B |"]
    ratios = []
    for key, title, ratio in ROWS:
        if key in report:
            q = report[key]
            rows.append(f"| {title} | {q[metric]:.2%} | {q['latency_ms']:.3f} ms | {q['size_bytes']:,} B |")
            ratios.append(f"| {ratio} | {q[metric] - f[metric]:+.2%} | {q['latency_ms'] / f['latency_ms']:.2f}x | "
                          f"{q['size_bytes'] / f['size_bytes']:.3f}x |")  # fmt: skip
    model = os.path.basename(s["imported"]) if s.get("imported") else s["model"]
    options = "".join(f", {name.replace('_', ' ')} {s[name]}" for name in tasks.get(s["task"]).OPTIONS if name in s)
    return (
        f"# mbv3 recipe: {model} on {s['data']} ({s['image_size']}px, {s['task']}{options})\n\n"
        f"| | {metric} | LiteRT latency (1 thread) | file size |\n|---|---|---|---|\n"
        + "\n".join(rows + ratios) + "\n\n"
        f"Validation images: {report['validation_images']}. Step times (s): "
        + (", ".join(f"{k} {v:.0f}" for k, v in timings.items()) or "-")
        + "\n\n"
        + (f"Training: {report['advice']}.\n\n" if report.get("advice") else "")
        + shipping(s["task"])
    )


def shipping(task):
    """Which files to ship, and the MediaPipe Tasks code that runs them."""
    task_class, method, result, option = tasks.get(task).MEDIAPIPE
    return (
        "## Files to ship\n\n"
        "- `int8.tflite`: int8 inside, float32 RGB pixels (0-255) in (normalization mean 0, std 1 in its\n"
        "  metadata; the QUANTIZE runs inside XNNPACK), uint8 scores out (a detector: the float32 boxes, classes,\n"
        "  scores and count of TFLite_Detection_PostProcess); class names\n"
        "  and model information in its TFLite metadata. `float.tflite`: float32, the same metadata.\n"
        "- Both run in MediaPipe Tasks (Android, iOS, web, Python) as they are:\n\n"
        "```python\n"
        "import mediapipe as mp\n"
        "from mediapipe.tasks.python import BaseOptions, vision\n\n"
        f"options = vision.{task_class}Options(base_options=BaseOptions(model_asset_path=\"int8.tflite\"), {option})\n"
        f"with vision.{task_class}.create_from_options(options) as model:\n"
        f"    result = model.{method}(mp.Image.create_from_file(\"photo.jpg\"))\n"
        f"    print({result})\n"
        "```\n"
    )


def plot(report, histories):
    """PNG bytes: metric, latency and file size, float vs int8 (values on the bars), and the training curves."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    metric = _metric(report)
    figure, axes = pyplot.subplots(1, 4, figsize=(16, 3.8))
    kinds = [k for k in ("float", "int8", "int8_ptq") if k in report]
    panels = [
        (f"validation {metric}", [report[k][metric] for k in kinds], "{:.2%}"),
        ("LiteRT latency, 1 thread (ms)", [report[k]["latency_ms"] for k in kinds], "{:.3f} ms"),
        ("file size (MB)", [report[k]["size_bytes"] / 1e6 for k in kinds], "{:.2f} MB"),
    ]
    for axis, (title, values, label) in zip(axes, panels):
        bars = axis.bar(kinds, values, color=["tab:blue", "tab:orange", "tab:green"][: len(kinds)])
        axis.bar_label(bars, labels=[label.format(v) for v in values], label_type="center", color="white")
        axis.set_title(title)
    axes[0].set_ylim(0, 1)
    curve = tasks.get(report["settings"]["task"]).CURVE
    curves, offset = axes[-1], 0
    for name, history in histories.items():
        values = history.get(f"val_{curve}", [])
        epochs = range(offset + 1, offset + len(values) + 1)
        curves.plot(epochs, values, marker="o", label=f"{name} val {curve}")
        curves.plot(epochs, history.get(curve, []), linestyle="--", label=f"{name} train {curve}")
        offset += len(values)
    curves.set_title("training curves")
    curves.set_xlabel("epoch")
    curves.legend(fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    pyplot.close(figure)
    return buffer.getvalue()


def write_adapt(report, out):
    """``adapt.md`` and ``adapt.png`` of ``mbv3 adapt``'s ``report`` (``adapt.json`` holds it whole)."""
    write_atomically(adapt_markdown(report).encode(), os.path.join(out, "adapt.md"), overwrite=True)
    write_atomically(adapt_plot(report), os.path.join(out, "adapt.png"), overwrite=True)


def adapt_markdown(report):
    start, adapted = report["start"], report["adapted"]
    rows = [f"| {i['index'] + 1} | {i['cut']} | {i['width_before']} -> {i['width_after']} | "
            f"{_ms(i.get('estimated_ms'))} | {i['latency_ms']:.4f} | {i.get('half_ms', 0.0):.4f} | "
            f"{_error(i)} | {i['score']:.2%} | {_minutes(i.get('elapsed_s'))} |"
            for i in report["iterations"]]  # fmt: skip
    kept = report.get("kept_iteration")
    widths = [f"| {space} | {start['widths'][space]} | {adapted['widths'][space]} |" for space in start["widths"]]
    return (
        f"# mbv3 adapt: NetAdapt to {report['target_ms']:.4f} ms\n\n"
        f"| | the search's latency (table, re-anchored) | measured whole (int8, side by side) |\n|---|---|---|\n"
        f"| start | {start['table_ms']:.4f} ms | {start['measured_ms']:.4f} ms |\n"
        f"| adapted | {adapted['table_ms']:.4f} ms | {adapted['measured_ms']:.4f} ms "
        f"({report['measured_ratio']:.2f}x) |\n\n"
        f"The table's estimate of each chosen model against its measurement (side by side with the start): "
        f"largest error {report['table_error']:+.1%}.\n\n"
        f"Validation accuracy (float): start {start['val_accuracy']:.2%}, adapted {adapted['val_accuracy']:.2%} "
        f"(after {report['options']['finetune_epochs']} fine-tuning epoch(s)).\n\n"
        f"Proposals were scored on {report['holdout_images']} training images held out of their fine-tuning.\n\n"
        + (f"The search stopped after {len(report['iterations'])} iteration(s): {report['stop']}; the adapted model "
           + (f"is iteration {kept}'s" if kept else "has the start's widths") + ", fine-tuned.\n\n"
           if "stop" in report else "")
        + "![latency and holdout accuracy per iteration](adapt.png)\n\n"
        "| iteration | cut | width | estimated (ms) | measured (ms) | +/- (95%) | table error | holdout accuracy "
        "| time |\n|---|---|---|---|---|---|---|---|---|\n"
        + (f"| start | | | | {start['table_ms']:.4f} | {start.get('half_ms', 0.0):.4f} | | "
           f"{start['holdout_score']:.2%} | |\n" if start.get("holdout_score") is not None else "")
        + "\n".join(rows)
        + "\n\n| width | start | adapted |\n|---|---|---|\n"
        + "\n".join(widths)
        + "\n"
    )


def _ms(value):
    return "" if value is None else f"{value:.4f}"


def _error(iteration):
    estimated = iteration.get("estimated_ms")
    return "" if estimated is None else f"{estimated / iteration['latency_ms'] - 1:+.1%}"


def _minutes(seconds):
    return "" if seconds is None else f"{seconds / 60:.1f} min"


def adapt_plot(report):
    """PNG bytes: the latency (measured, and the table's estimate) and the holdout accuracy per iteration."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    iterations = report["iterations"]
    steps = [0] + [i["index"] + 1 for i in iterations]
    figure, (left, right) = pyplot.subplots(1, 2, figsize=(10, 3.8))
    left.errorbar(steps, [report["start"]["table_ms"]] + [i["latency_ms"] for i in iterations],
                  yerr=[report["start"].get("half_ms", 0.0)] + [i.get("half_ms", 0.0) for i in iterations],
                  marker="o", capsize=3, label="measured, 95% interval (side by side with the start)")  # fmt: skip
    estimated = [(i["index"] + 1, i["estimated_ms"]) for i in iterations if i.get("estimated_ms") is not None]
    if estimated:
        left.plot(*zip(*estimated), marker="x", linestyle="none", label="table estimate when chosen")
    left.axhline(report["target_ms"], color="tab:red", linestyle="--", label="target")
    left.set_title("int8 latency (ms)")
    left.legend(fontsize=7)
    start_score = report["start"].get("holdout_score")
    scores = ([start_score] if start_score is not None else []) + [i["score"] for i in iterations]
    right.plot(steps[len(steps) - len(scores) :], scores, marker="o", color="tab:orange")
    right.set_title("holdout accuracy after the short fine-tune")
    for axis in (left, right):
        axis.set_xlabel("iteration")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    pyplot.close(figure)
    return buffer.getvalue()
