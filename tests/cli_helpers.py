"""What the CLI tests share: running ``mbv3`` as a user does, its one-line errors, kills mid-run, a small folder."""

import contextlib
import csv
import io
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from keras_mbv3.backend import IS_KERAS_3
from keras_mbv3.recipes.cli import main

# The CLI runs on the Keras line of the test process (Keras 3 unless TF_USE_LEGACY_KERAS=1).
# The long runs are on Keras 3, the default; tf_keras runs the multi-worker train, qat and export.
keras_3_only = pytest.mark.skipif(not IS_KERAS_3, reason="long CLI runs: on the default Keras line")
legacy_only = pytest.mark.skipif(IS_KERAS_3, reason="the tf_keras line's own CLI run")
USER_ENV = dict(os.environ)


def run_cli(*args, timeout=600, env=None):
    """``mbv3 ARGS`` in a new process, as a user runs it (``env``: variables set for it)."""
    return subprocess.run([sys.executable, "-m", "keras_mbv3", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**USER_ENV, **(env or {})})  # fmt: skip


def free_port():
    """A TCP port of localhost that nothing listens on (for a coordinator)."""
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def _exit_code(args):
    """``mbv3 ARGS`` run by ``main`` in this process; its exit code."""
    try:
        return main([str(a) for a in args])
    except SystemExit as exit:  # argparse's own errors
        return exit.code


def call_cli(capsys, *args):
    """``mbv3 ARGS`` in this process (fast: TensorFlow is loaded once); a result like ``run_cli``'s."""
    code = _exit_code(args)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def call_cli_captured(*args):
    """``call_cli`` where pytest's ``capsys`` is not at hand (a module fixture): the output is caught here."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = _exit_code(args)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("mbv3")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


def epochs_logged(path):
    return [int(row["epoch"]) for row in csv.DictReader(open(path))] if os.path.exists(path) else []


def kill_when_logged(args, log, text, timeout=600):
    """Start ``args`` with its output to the file ``log``; SIGKILL it once ``text`` appears there."""
    with open(log, "w") as output:  # unbuffered: the line is in the file as soon as it is printed
        process = subprocess.Popen(
            args, stdout=output, stderr=subprocess.STDOUT, env={**USER_ENV, "PYTHONUNBUFFERED": "1"}
        )
    deadline = time.time() + timeout
    while text not in log.read_text() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert text in log.read_text(), log.read_text()[-3000:]
    process.send_signal(signal.SIGKILL)
    process.wait()


def three_class_folder(root, per_split=(("train", 12), ("val", 4)), side=40, seed=0):
    """``root/{train,val}/{red,green,blue}/*.png``: noisy images tinted by class (48 in all by default)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in per_split:
        for tint, name in zip(np.eye(3) * 100, ("red", "green", "blue")):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 60, (side, side, 3)) + tint
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f"{i}.png")
    return root
