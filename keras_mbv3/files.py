"""Files written whole or not at all, never replacing what a user saved unless asked.

Every writer of the package (exports, run folders, reports) goes through
``write_atomically``.
"""

import contextlib
import hashlib
import os
import socket
import tempfile


def refuse_existing(path, overwrite):
    """Raise ``FileExistsError`` if ``path`` exists and ``overwrite`` is false."""
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path!r} exists; pass overwrite=True (or --overwrite) to replace it.")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _host_prefix():
    """Temporaries are ``.partial-HOST-PID-RANDOM-NAME``: a later write can tell which writer left one."""
    return f".partial-{socket.gethostname()}-"


def _running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove_stale_temporaries(folder, name):
    """Delete the temporaries of ``name`` in ``folder`` whose writer, on this host, no longer runs (it was killed).

    Writers on other hosts (a shared folder) and running ones keep theirs.
    """
    prefix = _host_prefix()
    for entry in os.listdir(folder):
        pid, _, rest = entry[len(prefix):].partition("-")
        if entry.startswith(prefix) and pid.isdigit() and rest.partition("-")[2] == name and not _running(int(pid)):
            with contextlib.suppress(FileNotFoundError):  # another writer removed it first
                os.unlink(os.path.join(folder, entry))


def write_atomically(data, path, overwrite=False):
    """Write ``data`` to ``path`` whole or not at all; never replace an existing file unless ``overwrite``.

    The data goes to a temporary file beside ``path``, renamed when whole; the
    temporaries that killed writers left for ``path`` are deleted first.
    """
    path = os.fspath(path)
    refuse_existing(path, overwrite)
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    _remove_stale_temporaries(folder, name)
    fd, temp = tempfile.mkstemp(dir=folder, prefix=f"{_host_prefix()}{os.getpid()}-", suffix="-" + name)
    try:
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp's 0600 would hide the user's file from their group
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(temp, path)
        else:
            os.link(temp, path)  # fails if path appeared meanwhile: no silent overwrite
            os.unlink(temp)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def sha256(path):
    """The SHA-256 of a file, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
