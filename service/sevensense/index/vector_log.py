"""The append log of a hoplite space: vectors added since the last compaction.

Rewriting ``usearch.index`` on every add costs the size of the index, not of the batch (about
2 GB per add at 1M 1024-d vectors). New vectors are appended here instead, as fixed-size
records (window id, float16 vector, CRC32), fsync'd inside the SQLite transaction that adds
their rows. How many records are committed lives in that same database
(``hoplite_metadata``: :data:`LOG_META_KEY`), so a row and its vector commit together: a
crash leaves either both or neither, and readers never read past what was committed. A
compaction folds the log into a new ``usearch.index`` and starts the next generation's log
file; a record a reader finds short or with a wrong checksum is corruption, reported with
the file's path, never served.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sevensense.errors import CorruptIndexError

LOG_META_KEY = "sevensense_log"
MAGIC = b"7SVLOG01"
_HEADER = struct.Struct("<8sII")  # magic, dim, generation


class LogState(BaseModel):
    """What is committed: the generation's log file and how many of its records count."""

    model_config = ConfigDict(extra="forbid")

    generation: int = Field(0, ge=0)
    entries: int = Field(0, ge=0)


def log_path(directory: Path, generation: int) -> Path:
    return directory / f"vectors.{generation}.log"


def record_size(dim: int) -> int:
    return 8 + 2 * dim + 4


def fsync_dir(directory: Path) -> None:
    """Makes a file created or renamed in ``directory`` survive a power cut."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# The most of a compaction's new file left dirty in the page cache before it is synced.
SYNC_CHUNK_BYTES = 32 << 20


def write_synced(
    path: Path, data: bytes | bytearray | memoryview, chunk_bytes: int = SYNC_CHUNK_BYTES
) -> int:
    """Write ``data`` to a new ``path`` in chunks, each fdatasync'd before the next is written,
    then fsync; the number of chunks synced.

    A large file written at page-cache speed and synced once leaves gigabytes dirty: on
    ext4 (data=ordered) the journal commit behind any other file's fsync — an add's fsync of
    its log — may have to write them out first (a 9.6 s add, issue 24). Written this way at
    most ``chunk_bytes`` of it is dirty at any time, whatever the disk's speed, because the
    writer waits for each sync. ``os.write`` and ``os.fdatasync`` release the GIL: other
    threads of the process run meanwhile."""
    view = memoryview(data).cast("B")
    syncs = 0
    with open(path, "wb", buffering=0) as out:
        fd = out.fileno()
        for start in range(0, len(view), chunk_bytes):
            piece = view[start : start + chunk_bytes]
            while piece:
                piece = piece[os.write(fd, piece) :]
            os.fdatasync(fd)
            syncs += 1
        os.fsync(fd)
    return syncs


def create_log(path: Path, dim: int, generation: int) -> None:
    """A new, empty log (a leftover of a crashed compaction of the same name is replaced)."""
    with open(path, "wb") as out:
        out.write(_HEADER.pack(MAGIC, dim, generation))
        out.flush()
        os.fsync(out.fileno())
    fsync_dir(path.parent)


def encode(keys: np.ndarray, vectors: np.ndarray) -> bytes:
    """Records for ``keys[i]`` → ``vectors[i]``, vectors stored as float16 like the HNSW file."""
    n, dim = vectors.shape
    body = np.empty((n, 8 + 2 * dim), dtype=np.uint8)
    body[:, :8] = np.asarray(keys, dtype="<u8").reshape(n, 1).view(np.uint8)
    body[:, 8:] = np.ascontiguousarray(vectors, dtype="<f2").view(np.uint8).reshape(n, 2 * dim)
    out = bytearray()
    for row in body:
        raw = row.tobytes()
        out += raw
        out += struct.pack("<I", zlib.crc32(raw))
    return bytes(out)


def append(path: Path, dim: int, committed: int, keys: np.ndarray, vectors: np.ndarray) -> None:
    """Write records after the ``committed`` ones and fsync; bytes beyond them (an add that
    never committed) are cut off first. The caller holds the space's writer lock."""
    if not path.exists():
        raise CorruptIndexError(f"vector log {path} is missing", path=str(path))
    end = _HEADER.size + committed * record_size(dim)
    with open(path, "r+b") as out:
        size = out.seek(0, os.SEEK_END)
        if size < end:
            raise CorruptIndexError(
                f"vector log {path} is truncated: {size} bytes, {end} committed", path=str(path)
            )
        out.truncate(end)
        out.seek(end)
        out.write(encode(keys, vectors))
        out.flush()
        os.fsync(out.fileno())


class LogReader:
    """The committed records of one log file, read incrementally as adds commit: keys, their
    vectors (float32 of the stored float16) and each key's row (the last record wins)."""

    def __init__(self, path: Path, dim: int, generation: int) -> None:
        self.path = path
        self.dim = dim
        self.generation = generation
        self.count = 0
        self._keys = np.zeros(0, dtype=np.uint64)
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self.rows: dict[int, int] = {}
        self._sorted = (np.zeros(0, np.uint64), np.zeros(0, np.int64))
        self._sorted_at = -1

    @property
    def keys(self) -> np.ndarray:
        return self._keys[: self.count]

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors[: self.count]

    def load(self, entries: int) -> None:
        """Extend to ``entries`` committed records (never shrinks: a generation only grows)."""
        if entries <= self.count:
            return
        size = record_size(self.dim)
        try:
            with open(self.path, "rb") as f:
                header = f.read(_HEADER.size)
                if self.count == 0:
                    self._check_header(header)
                f.seek(_HEADER.size + self.count * size)
                want = (entries - self.count) * size
                raw = f.read(want)
        except FileNotFoundError as exc:
            raise CorruptIndexError(
                f"vector log {self.path} is missing ({entries} vectors committed)",
                path=str(self.path),
            ) from exc
        if len(raw) != want:
            raise CorruptIndexError(
                f"vector log {self.path} is truncated: {entries} vectors committed, "
                f"{self.count + len(raw) // size} present",
                path=str(self.path),
            )
        recs = np.frombuffer(raw, dtype=np.uint8).reshape(-1, size)
        for i, rec in enumerate(recs):
            if zlib.crc32(rec[:-4].tobytes()) != int(rec[-4:].view("<u4")[0]):
                raise CorruptIndexError(
                    f"vector log {self.path}: record {self.count + i} fails its checksum",
                    path=str(self.path),
                )
        keys = recs[:, :8].copy().view("<u8").reshape(-1).astype(np.uint64)
        vecs = recs[:, 8:-4].copy().view("<f2").astype(np.float32)
        base = self.count
        if entries > len(self._keys):  # grow by doubling: an add costs its own size
            cap = max(entries, 2 * len(self._keys), 64)
            grown = np.zeros((cap, self.dim), dtype=np.float32)
            grown[:base] = self._vectors[:base]
            self._vectors = grown
            self._keys = np.concatenate([self._keys[:base], np.zeros(cap - base, np.uint64)])
        self._keys[base:entries] = keys
        self._vectors[base:entries] = vecs
        for i, key in enumerate(keys.tolist()):
            self.rows[key] = base + i
        self.count = entries

    def _check_header(self, header: bytes) -> None:
        if len(header) != _HEADER.size:
            raise CorruptIndexError(f"vector log {self.path} has no header", path=str(self.path))
        magic, dim, generation = _HEADER.unpack(header)
        if magic != MAGIC or dim != self.dim or generation != self.generation:
            raise CorruptIndexError(
                f"vector log {self.path} is not generation {self.generation} of a {self.dim}-d "
                f"space (magic {magic!r}, {dim}-d, generation {generation})",
                path=str(self.path),
            )

    def positions(self, keys: np.ndarray) -> np.ndarray:
        """Each key's record (its last), or -1: a binary search over the live keys, sorted
        once per load."""
        if not self.rows:
            return np.full(len(keys), -1, dtype=np.int64)
        if self._sorted_at != self.count:
            live = self.live()
            order = np.argsort(self.keys[live], kind="stable")
            self._sorted = (self.keys[live][order], live[order])
            self._sorted_at = self.count
        sorted_keys, sorted_pos = self._sorted
        idx = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
        return np.where(sorted_keys[idx] == keys, sorted_pos[idx], -1).astype(np.int64)

    def live(self) -> np.ndarray:
        """Positions of the records that count (a key's last)."""
        if len(self.rows) == self.count:
            return np.arange(self.count)
        return np.fromiter(sorted(self.rows.values()), dtype=np.int64, count=len(self.rows))
