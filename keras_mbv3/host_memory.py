"""Keep the memory a train step frees in the process, so that the next step does not fault it in again (glibc).

XLA's CPU runtime allocates a step's buffers with ``malloc``. glibc gives each
chunk over its mmap threshold (32 MB at most) a mapping of its own and unmaps
it when freed, and a thread's arena maps the large chunks it cannot hold, so
every step the kernel maps in and zeroes those pages again (and on a VM that
reports freed pages to its host, as this one does, the host too). Measured on
MobileNetV3Small at 224 px, batch 32, one core, JAX: 246,718 minor page faults
(1.0 GB) and 0.36-0.41 s of kernel time per float step, 334,144 (1.4 GB) and
0.45-0.51 s per QAT step; after :func:`retain_freed_memory` no faults and no
kernel time, and the steps took 3.77-3.97 s against 4.27-4.88 s (QAT 3.92-4.20 s
against 4.43-4.98 s). Two JAX workers side by side (``benchmarks/host_memory.py``,
4 rounds of 3 steps): 278,384 faults a step against 261; ours float 4.662 s
against 4.208 s retained, QAT 5.682 s against 4.499 s (QAT / float 1.22
against 1.07). glibc's huge pages (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``)
cut the faults to 3K but not the time: the QAT step then spent 0.8-1.1 s in
the kernel.

The ``mbv3`` command line calls it on the JAX backend. TensorFlow's CPU steps
fault too (about 280K a step in ``benchmarks/train_speed.py``), but were no
faster with it (medians 0.79-0.88 s in two runs with it, one of them
disturbed, against 0.76-0.80 s in two without; not side by side), so the
command line leaves TensorFlow's and PyTorch's memory as it is.
"""

import ctypes
import sys

# mallopt's parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8


def retain_freed_memory():
    """Make glibc keep freed memory for reuse: no mappings for large chunks, no trimming, one arena.

    Call it before the backend starts its threads (before the first computation):
    a thread that already has an arena keeps it. The process then holds the
    largest heap it reached until it ends, as a training process does anyway.

    Returns:
        True if glibc took the three settings; False where the C library is not
        glibc (macOS, Windows, musl), which is left as it is.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version"):  # not glibc
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    settings = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1), (M_ARENA_MAX, 1))
    taken = [libc.mallopt(parameter, value) == 1 for parameter, value in settings]  # each, even after a refusal
    return all(taken)
