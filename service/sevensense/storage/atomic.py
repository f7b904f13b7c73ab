"""Files that readers share with writers: atomic replace, an advisory lock, a signature.

Gateway workers, model services, the CLI and the object store's local backend all read and
write files that another process may read at the same moment. Readers must never see a
half-written file, so writes go to a temporary file in the same directory followed by
``os.replace`` (atomic on POSIX), and the new content survives a power cut once the write
returns (fsync of the file and its directory). Writers doing a read-modify-write serialise
on ``flock`` over a sidecar lock file rather than the data file, whose inode changes on
every replace.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: Path, content: bytes | Callable[[BinaryIO], int], *, mode: int) -> int:
    """``content`` is the bytes, or a function that writes them to the open temporary file
    and returns how many it wrote. ``mode`` is explicit: key files are 0o600, shared state
    0o644, and a default would hide which one a caller meant."""
    fill: Callable[[BinaryIO], int]
    if isinstance(content, bytes):
        data = content
        fill = lambda out: out.write(data)  # noqa: E731
    else:
        fill = content
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            written = fill(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return written


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold ``flock(LOCK_EX)`` on ``<path>.lock`` for the duration of the block.

    Every call opens its own descriptor, so the lock also excludes other threads of the same
    process; it must therefore not be re-entered on the same path.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def file_signature(path: Path) -> tuple[int, int, int] | None:
    """What changes whenever the file is replaced or rewritten; None when it does not exist."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)
