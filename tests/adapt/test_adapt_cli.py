"""``mbv3 adapt`` end to end on an image folder: kill and resume, refusals, and the later steps taking its model."""

import json
import sys

import pytest

from keras_mbv3.adapt import search
from keras_mbv3.recipes import adapt_step

from cli_helpers import assert_one_line_error, call_cli, keras_3_only, kill_when_logged, three_class_folder


pytestmark = pytest.mark.slow  # trains, converts or starts processes: `make test`, not `make check`


@keras_3_only  # ~1.3 min alone; tf_keras runs the library's tests (tests/adapt), its engine's quantization included
def test_adapt_reaches_its_target_and_resumes_after_a_kill(capsys, tmp_path):
    """Issue 14 on an image folder: NetAdapt killed after its first iteration resumes there; the adapted model is
    narrower, its table latency at the target; qat refuses a search without its adapted.keras."""
    out = tmp_path / "run"
    trained = call_cli(capsys, "train", "--data", three_class_folder(tmp_path / "set"), "--epochs", "2", "--out", out)
    assert trained.returncode == 0, trained.stderr
    assert_one_line_error(call_cli(capsys, "adapt", "--out", out), "`--target-ratio`", "--target-ms")
    assert_one_line_error(call_cli(capsys, "adapt", "--out", out, "--target-ratio", "1.5"), "`--target-ratio`", "1.5")
    options = ["--target-ratio", "0.85", "--step-fraction", "0.1", "--proposal-steps", "2", "--finetune-epochs", "1"]
    args = [sys.executable, "-m", "keras_mbv3", "adapt", "--out", str(out), *options]
    kill_when_logged(args, tmp_path / "adapt.log", "[adapt] iteration 1:")
    state = json.loads((out / "adapt" / "search.json").read_text())
    assert not (out / "adapted.keras").exists() and state["model"] == f"current_{len(state['iterations'])}.keras"
    assert [p.name for p in (out / "adapt").glob("current_*")] == [state["model"]]
    assert_one_line_error(call_cli(capsys, "qat", "--out", out), "adapt/ holds a search without its adapted.keras")
    assert_one_line_error(
        call_cli(capsys, "adapt", "--out", out, *options[:-1], "2"), "--finetune-epochs: 1 there, 2 now"
    )

    resumed = call_cli(capsys, *args[3:])  # the kill needed a process of its own; the resume does not
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "[adapt] resuming after iteration 1" in resumed.stdout and "[adapt] iteration 1:" not in resumed.stdout
    report = json.loads((out / "adapt.json").read_text())
    # stopped at the target: a model measured there within its interval (its table estimate, anchored on that
    # measurement, may lie above the target by up to the interval's half-width)
    assert report["stopped_by"] == "target" and report["target_ms"] < report["start"]["table_ms"]
    assert report["iterations"][0] == state["iterations"][0]
    # killed in the search, it went on cutting; killed in the final fine-tune (iteration 1 measured at the
    # target: measurements move with the machine's load), it only fine-tuned again
    if state["iterations"][0]["latency_ms"] > report["target_ms"]:
        assert len(report["iterations"]) >= 2
    else:
        assert len(report["iterations"]) == 1
    start, adapted = report["start"]["widths"], report["adapted"]["widths"]
    assert all(adapted[k] <= v for k, v in start.items()) and any(adapted[k] < v for k, v in start.items())
    assert report["holdout_images"] == 7 and 0 <= report["adapted"]["val_accuracy"] <= 1  # a fifth of 36
    assert "| start |" in (out / "adapt.md").read_text() and (out / "adapt.png").stat().st_size > 0
    again = call_cli(capsys, "adapt", "--out", out, *options[:-1], "2")  # adapted.keras: other options refused
    assert_one_line_error(again, "adapted with other options", "--finetune-epochs: 1 there, 2 now")
    same = call_cli(capsys, "adapt", "--out", out, *options)
    assert same.returncode == 0 and "[adapt] done before, reusing adapted.keras" in same.stdout
    # that QAT takes adapted.keras: tests/recipes/test_run.py; that a cut model is one int8 partition: test_widths.py


def test_a_search_of_another_float_model_or_an_adapted_model_of_unknown_options_is_refused(tmp_path):
    options = adapt_step.Options(target_ratio=0.7)
    state = adapt_step._read_state(str(tmp_path), options, "a" * 64)
    adapt_step._write_state(str(tmp_path), state)
    assert adapt_step._read_state(str(tmp_path), options, "a" * 64) == state
    with pytest.raises(FileExistsError, match=r"another float.keras \(SHA-256 aaaaaaaaaaaa...; now bbbbbbbbbbbb"):
        adapt_step._read_state(str(tmp_path), options, "b" * 64)
    with pytest.raises(FileExistsError, match="--target-ratio: 0.7 there, 0.8 now"):
        adapt_step._read_state(str(tmp_path), adapt_step.Options(target_ratio=0.8), "a" * 64)
    with pytest.raises(FileExistsError, match="without its adapt.json"):
        adapt_step.refuse_other_options(str(tmp_path), options)


def test_a_killed_search_resumes_with_other_limits_but_not_other_search_options(tmp_path):
    first = adapt_step.Options(0.7, step_fraction=0.1, time_budget=10.0)
    adapt_step._write_state(str(tmp_path), adapt_step._read_state(str(tmp_path), first, "a" * 64))
    longer = adapt_step.Options(0.7, step_fraction=0.1, time_budget=30.0, max_iterations=9, max_accuracy_drop=0.05)
    assert adapt_step._read_state(str(tmp_path), longer, "a" * 64)["options"]["time_budget"] == 30.0
    with pytest.raises(FileExistsError, match="--step-fraction: 0.1 there, 0.05 now"):
        adapt_step._read_state(str(tmp_path), adapt_step.Options(0.7, step_fraction=0.05), "a" * 64)
    assert longer.limits() == search.Limits(9, 1800.0, 0.05)


@pytest.mark.parametrize("option, value, flag", [("max_iterations", 0, "--max-iterations"),
                                                 ("time_budget", -5.0, "--time-budget"),
                                                 ("max_accuracy_drop", 1.5, "--max-accuracy-drop")])  # fmt: skip
def test_bad_limits_name_their_flags(option, value, flag):
    with pytest.raises(ValueError, match=f"`{flag}`: received {flag}={value!r}"):
        adapt_step.Options(target_ratio=0.7, **{option: value}).check()


def test_a_search_that_stopped_is_not_searched_again_under_the_same_limits(tmp_path):
    """A kill in the final fine-tune (or a deleted adapted.keras) resumes with the search's decision: its stop and
    the iteration it kept, loaded from adapt/; other limits search again."""
    from keras_mbv3.backend import keras

    adaptation, lines = object.__new__(adapt_step._Adaptation), []
    adaptation.options, adaptation.folder = adapt_step.Options(0.7, time_budget=10.0), str(tmp_path)
    adaptation.log = lines.append
    iterations = [search.Iteration(i, "block expansion", "s", 64, 56 - 8 * i, 0.9, 0.95, 5) for i in range(3)]
    adaptation.state = {"stopped": {"by": "time-budget", "kept": 1, "iterations": 3, "limits": adaptation._limits()}}
    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Dense(2, name="kept")(inputs)).save(str(tmp_path / "current_2.keras"))
    result = adaptation._stopped("the start", ("the last", iterations))
    assert result.stopped_by == "time-budget" and result.kept == 1 and result.model.layers[-1].name == "kept"
    assert lines == ["[adapt] the search stopped before: " + search.STOPS["time-budget"]]
    adaptation.state["stopped"]["kept"] = 2
    assert adaptation._stopped("the start", ("the last", iterations)).model == "the last"
    adaptation.state["stopped"]["kept"] = 0  # its file is gone: search again
    assert adaptation._stopped("the start", ("the last", iterations)) is None
    adaptation.state["stopped"]["kept"] = 1
    adaptation.options = adapt_step.Options(0.7, time_budget=20.0)
    assert adaptation._stopped("the start", ("the last", iterations)) is None


def test_a_final_fine_tune_begun_on_another_model_starts_over(tmp_path):
    """Killed in the final fine-tune, then resumed with other limits: if they keep the same model the fine-tune's
    backup and log stay (it resumes); if they keep other widths, both go (weights of another shape)."""
    adaptation = object.__new__(adapt_step._Adaptation)
    adaptation.options, adaptation.folder = adapt_step.Options(0.7, time_budget=10.0), str(tmp_path)
    adaptation.state = {"stopped": {"by": "time-budget", "kept": 1, "iterations": 3, "limits": adaptation._limits()},
                        "iterations": []}  # fmt: skip
    backup, log = tmp_path / "finetune_backup", tmp_path / "finetune_history.csv"

    def leave_a_fine_tune():
        backup.mkdir(exist_ok=True)
        (backup / "latest.weights.h5").write_bytes(b"weights")
        log.write_text("epoch,loss\n0,1.0\n")

    iterations = [search.Iteration(i, "block expansion", "s", 64, 56 - 8 * i, 0.9, 0.95, 5) for i in range(3)]
    leave_a_fine_tune()
    adaptation._record_stop(search.Result("kept", iterations, "time-budget", 1))  # the same decision
    assert backup.exists() and log.exists() and not (tmp_path / "search.json").exists()
    adaptation.options = adapt_step.Options(0.7, time_budget=30.0)  # a longer budget, the same model kept
    adaptation._record_stop(search.Result("kept", iterations, "target", 1))
    assert backup.exists() and log.exists()
    assert json.loads((tmp_path / "search.json").read_text())["stopped"]["limits"]["time_budget"] == 30.0
    adaptation.options = adapt_step.Options(0.7, time_budget=20.0, max_iterations=5)
    adaptation._record_stop(search.Result("kept", iterations, "max-iterations", 2))
    assert not backup.exists() and not log.exists()
    saved = json.loads((tmp_path / "search.json").read_text())["stopped"]
    assert saved == {"by": "max-iterations", "kept": 2, "iterations": 3, "limits": adaptation._limits()}
