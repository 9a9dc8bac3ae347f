"""``retain_freed_memory``: a freed large chunk is used again, not mapped and faulted in again.

Each case runs in a process of its own: the setting is the process's, for good.
"""

import json
import os
import platform
import subprocess
import sys

import pytest

CHUNK = 64 << 20  # over glibc's largest mmap threshold (32 MB)

ALLOCATE_AND_FREE = f"""
import ctypes, json, resource, sys, threading
from keras_mbv3.host_memory import retain_freed_memory

retained = retain_freed_memory() if sys.argv[1] == "retain" else None
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
faults = {{"main": [], "thread": []}}

def allocate_and_free(where):
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        chunk = libc.malloc({CHUNK})
        ctypes.memset(chunk, 1, {CHUNK})
        libc.free(chunk)
        faults[where].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

allocate_and_free("main")
thread = threading.Thread(target=allocate_and_free, args=("thread",))  # a thread of its own: its own arena
thread.start()
thread.join()
print(json.dumps({{"retained": retained, **faults}}))
"""


def faults_of(mode):
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}  # glibc's defaults, then ours
    result = subprocess.run([sys.executable, "-c", ALLOCATE_AND_FREE, mode], capture_output=True, text=True,
                            timeout=120, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def huge_pages_always():
    try:
        return "[always]" in open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        return False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc")
@pytest.mark.skipif(huge_pages_always(), reason="transparent huge pages for all memory: a fault maps 2 MB")
def test_a_freed_chunk_is_used_again_without_page_faults_on_any_thread():
    pages = CHUNK // 4096
    control, retained = faults_of("control"), faults_of("retain")
    assert retained["retained"] is True
    for where in ("main", "thread"):
        assert min(control[where]) >= pages, control  # glibc maps and faults the chunk in every time
    assert retained["main"][0] >= pages - 64, retained  # the first time the heap grows (its top may hold a few)
    assert max(retained["main"][1:]) < pages // 100, retained  # then the same pages are used again,
    assert max(retained["thread"]) < pages // 100, retained  # by another thread too (one arena)


def test_mbv3_retains_freed_memory_on_jax_alone(monkeypatch, tmp_path, capsys):
    from keras_mbv3 import host_memory
    from keras_mbv3.backend import IS_KERAS_3, keras
    from keras_mbv3.recipes import cli

    calls = []
    monkeypatch.setattr(host_memory, "retain_freed_memory", lambda: calls.append("retain") or True)
    assert cli.main(["bench", "--out", str(tmp_path / "no run here")]) == 2  # a command that fails at once
    assert "no run here" in capsys.readouterr().err
    assert calls == (["retain"] if IS_KERAS_3 and keras.backend.backend() == "jax" else [])
