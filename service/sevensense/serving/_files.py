"""Small state files shared by every worker process: atomic replace and an advisory lock.

Gateway workers, model services and the CLI all read and write the same files under
``state_dir``. Readers must never see a half-written file, so writes go to a temporary file
in the same directory followed by ``os.replace`` (atomic on POSIX). Writers doing a
read-modify-write serialise on ``flock`` over a sidecar lock file rather than the data file
itself, because the data file's inode changes on every replace.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from sevensense.storage.atomic import atomic_write as storage_atomic_write


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


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never a mix."""
    storage_atomic_write(path, lambda out: out.write(data), mode)


def file_signature(path: Path) -> tuple[int, int, int] | None:
    """What changes whenever the file is replaced or rewritten; None when it does not exist."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)
