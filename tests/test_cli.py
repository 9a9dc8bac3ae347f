"""The mbv3 command line: errors are one line, no traceback, non-zero exit."""

import subprocess
import sys


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "keras_mbv3", *args], capture_output=True, text=True, timeout=300)


def test_help_shows_an_example():
    result = run_cli("recipe", "--help")
    assert result.returncode == 0 and "example: mbv3 recipe" in result.stdout


def test_bad_flag_value_is_one_clear_line(tmp_path):
    result = run_cli("recipe", "--data", "digits", "--model", "medium", "--out", str(tmp_path / "run"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "`--model`" in result.stderr and "'medium'" in result.stderr and "small" in result.stderr


def test_other_settings_in_existing_run_are_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "settings.json").write_text('{"data": "digits", "model": "large"}')
    result = run_cli("recipe", "--out", str(out), "--image-size", "32")
    assert result.returncode != 0 and "Traceback" not in result.stderr and "another --out" in result.stderr
    assert (out / "settings.json").read_text() == '{"data": "digits", "model": "large"}'
