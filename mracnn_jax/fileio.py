"""Writing output files the way other tools do: atomically, with the permissions ``open()`` gives.

``write_atomic(path, write_fn)`` calls ``write_fn(f)`` on a temporary file beside ``path`` (a
binary file object, writable and seekable: ``zipfile.ZipFile(f, "w")`` works on it) and renames
it into place only once ``write_fn`` has returned and the data is on the disk (``fsync`` of the
file, then of the directory after the rename), so neither a failure nor a crash leaves a partial
``path``, and a failure leaves no temporary file behind.

``tempfile.mkstemp`` creates its file with mode 0600 whatever the umask. Before the rename the
temporary file gets the mode ``open(path, "wb")`` would have given: a new file ``0o666 & ~umask``
(0644 under the usual umask 0022), a file that already exists keeps its permission bits.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from typing import IO, Any

__all__ = ["current_umask", "new_file_mode", "write_atomic"]


def current_umask() -> int:
    """The process umask.

    Read from ``/proc/self/status`` where the kernel gives it (Linux 4.7 and later), since
    ``os.umask`` can only read it by setting it, which races with threads creating files; else
    with ``os.umask`` set and put back at once.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode(path: str | os.PathLike) -> int:
    """The permission bits ``open(path, "wb")`` leaves ``path`` with: those of an existing file,
    else ``0o666 & ~umask``."""
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is not None and stat.S_ISREG(st.st_mode):
        return stat.S_IMODE(st.st_mode)
    return 0o666 & ~current_umask()


def _fsync_directory(directory: str) -> None:
    """Makes a rename in ``directory`` durable (POSIX); a no-op where directories cannot be opened
    (Windows) or synced (some network file systems)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(
    path: str | os.PathLike,
    write_fn: Callable[[IO[bytes]], Any],
    *,
    prefix: str = ".tmp-mracnn-",
    suffix: str = "",
) -> None:
    """Calls ``write_fn(f)`` on a temporary file in ``path``'s directory, gives it the mode
    ``new_file_mode(path)``, flushes it to the disk and renames it to ``path``, then flushes the
    directory: after a crash or a power cut ``path`` holds either its old content or all of the
    new one, never a part. On any error removes the temporary file and re-raises."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    mode = new_file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        _fsync_directory(directory)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise
