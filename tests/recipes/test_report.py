"""The run report: report.json, report.md and report.png written from one result."""

import io
import json

import pytest

from keras_mbv3.recipes import report

HISTORIES = {
    "float": {"accuracy": [0.5, 0.9, 0.97], "val_accuracy": [0.1, 0.8, 0.98]},
    "qat": {"accuracy": [0.97], "val_accuracy": [0.975]},
}


def result(metric):
    return {
        "float": {metric: 0.98, "latency_ms": 0.5, "size_bytes": 6_000_000},
        "int8": {metric: 0.975, "latency_ms": 0.2, "size_bytes": 1_790_000},
        "settings": {"model": "small", "data": "digits", "image_size": 32,
                     "task": {"accuracy": "classification", "miou": "segmentation", "map": "detection"}[metric]},
        "timings_s": {"train_s": 49.3, "qat_s": 33.1},
        "validation_images": 359,
    }


@pytest.mark.parametrize("metric", ["accuracy", "miou"])
def test_report_files(tmp_path, metric):
    from matplotlib import image

    report.write(result(metric), HISTORIES, str(tmp_path))
    assert json.loads((tmp_path / "report.json").read_text()) == result(metric)
    markdown = (tmp_path / "report.md").read_text()
    assert f"| | {metric} | LiteRT latency (1 thread) | file size |" in markdown
    assert "| float32 | 98.00% | 0.500 ms | 6,000,000 B |" in markdown
    assert "| int8 (QAT) | 97.50% | 0.200 ms | 1,790,000 B |" in markdown
    assert "| int8 / float | -0.50% | 0.40x | 0.298x |" in markdown
    assert "train_s 49, qat_s 33" in markdown
    assert "## Files to ship" in markdown and "model_asset_path=\"int8.tflite\"" in markdown
    assert "Training:" not in markdown
    advised = {**result(metric), "advice": "2 epochs (6 steps) are fewer than ...: train longer: --epochs 1000"}
    assert "Training: 2 epochs (6 steps) are fewer than ...: train longer: --epochs 1000.\n" in report.markdown(
        advised)  # fmt: skip
    assert markdown.startswith("# mbv3 recipe: small on digits (32px, classification)\n" if metric == "accuracy" else
                               "# mbv3 recipe: small on digits (32px, segmentation)\n")  # fmt: skip
    detection = {**result("map"), "settings": {**result("map")["settings"], "min_stride": 8}}
    assert report.markdown(detection).startswith("# mbv3 recipe: small on digits (32px, detection, min stride 8)\n")
    picture = image.imread(io.BytesIO((tmp_path / "report.png").read_bytes()), format="png")
    assert picture.shape[:2] == (342, 1440)  # 16 x 3.8 inches at 90 dpi: four panels
    assert picture[..., :3].std() > 0.1  # drawn, not blank
