"""Issue 22: ``mbv3`` on JAX (QAT over 2 processes), and one run folder that goes from TensorFlow to JAX and back.

The JAX line of ``make test`` (``KERAS_BACKEND=jax``); the TensorFlow steps run as a user runs
them, in a process of their own (one process has one backend). The ``.keras`` files are the bridge.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cli_helpers import assert_one_line_error, call_cli_captured, free_port, run_cli
from keras_mbv3.backend import IS_KERAS_3, keras

pytestmark = pytest.mark.skipif(not IS_KERAS_3 or keras.backend.backend() != "jax",
                                reason="the JAX line of make test (KERAS_BACKEND=jax)")  # fmt: skip

SMALL = ("--data", "digits", "--model", "small", "--image-size", "32")


def on_tensorflow(*args):
    return run_cli(*args, timeout=900, env={"KERAS_BACKEND": "tensorflow", "TF_USE_LEGACY_KERAS": "0"})


def on_two_jax_processes(*args):
    """``mbv3 ARGS --strategy data-parallel`` as processes 0 and 1 of one run on loopback."""
    cluster = ["--strategy", "data-parallel", "--num-processes", "2", "--coordinator", f"localhost:{free_port()}"]
    pair = [subprocess.Popen([sys.executable, "-m", "keras_mbv3", *map(str, args), *cluster, "--process-id", str(i)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]  # fmt: skip
    outputs = [process.communicate(timeout=900) for process in pair]
    return [subprocess.CompletedProcess(args, p.returncode, out, err) for p, (out, err) in zip(pair, outputs)]


def backend_recorded(out):
    return json.load(open(out / "settings.json"))["backend"]


@pytest.fixture(scope="module")
def run_across_backends(tmp_path_factory):
    """Float training on TensorFlow, QAT on JAX (2 processes, data-parallel), export + eval + bench on TensorFlow,
    PTQ export and eval on JAX."""
    out = tmp_path_factory.mktemp("across") / "run"
    steps = {}
    steps["train on tensorflow"] = on_tensorflow("train", *SMALL, "--epochs", "1", "--out", out)
    steps["recorded after train"] = backend_recorded(out)
    steps["qat on jax, process 0"], steps["qat on jax, process 1"] = on_two_jax_processes("qat", "--qat-epochs", "1",
                                                                                          "--out", out)  # fmt: skip
    steps["recorded after qat"] = backend_recorded(out)
    steps["recipe on tensorflow"] = on_tensorflow("recipe", "--out", out)
    steps["ptq export on jax"] = call_cli_captured("export", "--ptq", "--out", out)
    steps["eval on jax"] = call_cli_captured("eval", "--out", out, out / "int8_ptq.tflite")
    steps["bench on jax"] = call_cli_captured("bench", "--out", out)
    photo = out.parent / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(photo)
    steps["predict on jax"] = call_cli_captured("predict", "--file", out / "int8.tflite", photo, "--json")
    return out, steps


def test_each_step_ran_where_it_was_started_and_settings_name_the_backend(run_across_backends):
    out, steps = run_across_backends
    for name, result in steps.items():
        if not isinstance(result, str):
            assert result.returncode == 0, (name, result.stderr[-3000:])
    assert steps["recorded after train"] == "tensorflow" and steps["recorded after qat"] == "jax"
    assert "strategy: data-parallel, 2 replica(s)" in steps["qat on jax, process 1"].stdout
    assert not list(out.glob("*backup*"))  # the chief removed its backup once qat.keras was saved


def test_jax_made_qat_model_exports_on_tensorflow_as_one_int8_partition_that_learned(run_across_backends):
    from keras_mbv3.quantization.litert import graph_report

    out, _ = run_across_backends
    report = json.load(open(out / "report.json"))
    assert report["versions"]["backend"] == "tensorflow"
    # one epoch at 32 px: well above the 10% of chance, int8 close to float
    assert report["float"]["accuracy"] > 0.5 and report["int8"]["accuracy"] > report["float"]["accuracy"] - 0.1
    assert graph_report((out / "int8.tflite").read_bytes())["partitions"] == 1


def test_post_training_int8_exported_from_jax_through_the_worker_is_one_partition(run_across_backends):
    from keras_mbv3.quantization.litert import graph_report

    out, _ = run_across_backends
    found = graph_report((out / "int8_ptq.tflite").read_bytes())
    assert found["partitions"] == 1 and not found["float_ops"]
    evaluated = json.load(open(out / "eval.json"))[str(out / "int8_ptq.tflite")]
    assert evaluated["accuracy"] > 0.5  # calibrated on the data, from a model trained on TensorFlow


def test_bench_and_predict_run_in_a_jax_process(run_across_backends):
    """LiteRT needs no TensorFlow backend: bench and predict of the run's files in the JAX process."""
    out, steps = run_across_backends
    assert f"[bench] wrote {out / 'bench.json'}" in steps["bench on jax"].stdout  # over the recipe's, on TensorFlow
    models = json.load(open(out / "bench.json"))["models"]
    assert set(models) == {"float", "int8", "int8_ptq"} and all(m["latency_ms"] > 0 for m in models.values())
    printed = steps["predict on jax"].stdout
    (found,) = json.loads(printed[printed.index("[") :])
    scores = [t["score"] for t in found["top"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True) and all(0 <= x <= 1 for x in scores)
    assert [t["name"] for t in found["top"]] == [str(t["class"]) for t in found["top"]]  # the digits' names


def test_tf_distribute_strategies_on_jax_are_refused_in_one_line(tmp_path):
    for flags, named in ((("--strategy", "mirrored"), "`--strategy`"), (("--cpu-devices", "2"), "`--cpu-devices`")):
        result = call_cli_captured("train", *flags, "--out", tmp_path / "run")
        assert_one_line_error(result, named, "KERAS_BACKEND=tensorflow")
        assert not (tmp_path / "run").exists()
