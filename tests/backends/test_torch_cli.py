"""Issue 22: ``mbv3`` on PyTorch: train and QAT in this process, then the same run folder goes on on TensorFlow.

The PyTorch line of ``make test`` (``KERAS_BACKEND=torch``). The TensorFlow step runs as a user runs
it, in a process of its own (one process has one backend); the ``.keras`` files are the bridge.
"""

import json

import pytest

from cli_helpers import assert_one_line_error, call_cli_captured, run_cli
from keras_mbv3.backend import IS_KERAS_3, keras

pytestmark = pytest.mark.skipif(not IS_KERAS_3 or keras.backend.backend() != "torch",
                                reason="the PyTorch line of make test (KERAS_BACKEND=torch)")  # fmt: skip


@pytest.fixture(scope="module")
def run_across_backends(tmp_path_factory):
    """Float training and QAT on PyTorch (1 epoch each, digits at 32 px), export + eval + bench on TensorFlow."""
    out = tmp_path_factory.mktemp("torch") / "run"
    steps = {}
    steps["train on torch"] = call_cli_captured("train", "--data", "digits", "--model", "small", "--image-size", "32",
                                                "--epochs", "1", "--out", out)  # fmt: skip
    steps["qat on torch"] = call_cli_captured("qat", "--qat-epochs", "1", "--out", out)
    steps["recorded after qat"] = json.load(open(out / "settings.json"))["backend"]
    steps["recipe on tensorflow"] = run_cli("recipe", "--out", out, timeout=900,
                                            env={"KERAS_BACKEND": "tensorflow", "TF_USE_LEGACY_KERAS": "0"})  # fmt: skip
    return out, steps


def test_each_step_ran_and_the_torch_made_qat_model_exports_on_tensorflow_as_one_partition_that_learned(
    run_across_backends,
):
    from keras_mbv3.quantization.litert import graph_report

    out, steps = run_across_backends
    for name, result in steps.items():
        if not isinstance(result, str):
            assert result.returncode == 0, (name, result.stderr[-3000:])
    assert steps["recorded after qat"] == "torch"
    report = json.load(open(out / "report.json"))
    assert report["versions"]["backend"] == "tensorflow"
    # one epoch at 32 px: well above the 10% of chance, int8 close to float
    assert report["float"]["accuracy"] > 0.5 and report["int8"]["accuracy"] > report["float"]["accuracy"] - 0.1
    found = graph_report((out / "int8.tflite").read_bytes())
    assert found["partitions"] == 1 and not found["float_ops"]


def test_tf_distribute_strategies_and_data_parallel_on_torch_are_refused_in_one_line(tmp_path):
    for flags, named in ((("--strategy", "mirrored"), "the defaults on the torch backend"),
                         (("--strategy", "data-parallel"), "KERAS_BACKEND=jax")):  # fmt: skip
        result = call_cli_captured("train", *flags, "--out", tmp_path / "run")
        assert_one_line_error(result, "`--strategy`", named)
        assert not (tmp_path / "run").exists()
