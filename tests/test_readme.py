"""The README as written (issue 15): its Python blocks run, in order, in a new process on each Keras line;
its `mbv3` examples are valid command lines."""

import os
import re
import shlex
import subprocess
import sys

import pytest

from keras_mbv3.backend import IS_KERAS_3
from keras_mbv3.recipes.cli import parser

README = open(os.path.join(os.path.dirname(__file__), os.pardir, "README.md")).read()
# A block may be marked for one Keras line: <!-- readme-test: keras 3 --> or <!-- readme-test: tf_keras -->.
BLOCK = re.compile(r"(?:<!-- readme-test: (?P<only>[^>]+?) -->\n)?```(?P<language>\w+)\n(?P<code>.*?)```", re.S)
LINE = "keras 3" if IS_KERAS_3 else "tf_keras"


def blocks(language):
    return [(match["only"], match["code"]) for match in BLOCK.finditer(README) if match["language"] == language]


@pytest.mark.slow
def test_python_blocks_run_in_order_in_a_new_process(tmp_path):
    code = [code for only, code in blocks("python") if only in (None, LINE)]
    assert len(code) >= 6
    result = subprocess.run([sys.executable, "-c", "\n".join(code)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    written = {"custom.keras", "small.weights.h5", "model_int8.tflite", "model.tflite", "ptq.tflite",
               "qat.keras" if IS_KERAS_3 else "qat.h5"}  # fmt: skip
    assert written <= set(os.listdir(tmp_path))


def without_environment(line):
    """``mbv3 ...`` of a line, its leading ``NAME=value`` assignments left out."""
    return re.sub(r"^([A-Z_]+=\S+ )+", "", line)


@pytest.mark.parametrize("command", [without_environment(line) for _, code in blocks("bash")
                                     for line in code.splitlines() if without_environment(line).startswith("mbv3 ")])  # fmt: skip
def test_command_line_examples_parse(command):
    args = parser().parse_args(shlex.split(command)[1:])
    assert args.command == shlex.split(command)[1]
