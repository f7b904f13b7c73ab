"""The vectors of one hoplite space: the HNSW file hoplite reads, plus the append log.

``usearch.index`` (perch-hoplite's file) is memory-mapped read-only and changes only in a
compaction; adds go to the log (:mod:`sevensense.index.vector_log`), which is searched
exactly beside it. A key in both (a compaction that crashed before it committed) is the
log's. What is committed — the log's generation and length, and the size and CRC32 of the
HNSW file — is a JSON value in ``hoplite_metadata``, written in the same SQLite
transactions as the rows, so the rows, the log and the file agree after any crash.

A compaction snapshots the committed log, builds the new HNSW file beside the old one
without holding the writers' lock (adds go on appending), then, holding it briefly, copies
the records added meanwhile into the next generation's log, records the new file's size and
checksum as the *next* file, replaces the old file atomically, and commits the next
generation: a crash between those steps leaves a file one of the two records describes, and
log records already in the file, which the key rule above makes harmless.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import zlib
from pathlib import Path

import numpy as np

# onnxruntime is imported before usearch (see sevensense.index.hoplite).
import onnxruntime  # noqa: F401
from pydantic import BaseModel, ConfigDict, Field
from usearch.compiled import MetricKind, ScalarKind
from usearch.index import Index

from sevensense.errors import CorruptIndexError
from sevensense.index import hoplite_build
from sevensense.index.hoplite_build import BuildSpec, FileMark
from sevensense.index.records import SpaceInfo
from sevensense.index.vector_log import LogReader, append, create_log, fsync_dir, log_path
from sevensense.settings import IndexSettings
from sevensense.storage.atomic import file_signature

UINDEX_FILENAME = "usearch.index"
STATE_KEY = "sevensense_vectors"
_CHUNK = 1 << 22


class VectorState(BaseModel):
    """The committed state of a space's vectors (one ``hoplite_metadata`` value)."""

    model_config = ConfigDict(extra="forbid")

    generation: int = Field(0, ge=0)
    entries: int = Field(0, ge=0, description="committed records of this generation's log")
    index: FileMark | None = None
    next_index: FileMark | None = None


def read_state(db: sqlite3.Connection) -> VectorState:
    row = db.execute("SELECT value FROM hoplite_metadata WHERE key = ?", (STATE_KEY,)).fetchone()
    return VectorState() if row is None else VectorState.model_validate(json.loads(row[0]))


def write_state(db: sqlite3.Connection, state: VectorState) -> None:
    db.execute(
        "INSERT OR REPLACE INTO hoplite_metadata (key, value) VALUES (?, ?)",
        (STATE_KEY, state.model_dump_json()),
    )


def file_mark(path: Path) -> FileMark:
    crc = 0
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
    return FileMark(size=size, crc32=crc)


class SpaceVectors:
    """What a search sees: the mapped HNSW file and the committed log records."""

    def __init__(self, directory: Path, info: SpaceInfo, settings: IndexSettings) -> None:
        self.directory = directory
        self.info = info
        self.settings = settings
        self.metric = MetricKind.IP if info.metric == "cosine" else MetricKind.Cos
        self.main: Index | None = None
        self._main_sig: tuple[int, int, int] | None = None
        self._loaded = False
        self.log = LogReader(log_path(directory, 0), info.dim, 0)

    @property
    def index_path(self) -> Path:
        return self.directory / UINDEX_FILENAME

    # --- reading ------------------------------------------------------------------------

    def refresh(self, db: sqlite3.Connection) -> VectorState:
        """Catch up with what is committed; the state is read before the file is looked at,
        so a file replaced meanwhile is at least as new as the state (see the module)."""
        state = read_state(db)
        sig = file_signature(self.index_path)
        if not self._loaded or sig != self._main_sig:
            self.main = self._load_main(state, sig)
            self._main_sig = sig
            self._loaded = True
        if self.log.generation != state.generation:
            self.log = LogReader(
                log_path(self.directory, state.generation), self.info.dim, state.generation
            )
        self.log.load(state.entries)
        return state

    def _load_main(self, state: VectorState, sig: tuple[int, int, int] | None) -> Index | None:
        if sig is None:
            if state.index is not None:
                raise CorruptIndexError(
                    f"vector file {self.index_path} is missing", path=str(self.index_path)
                )
            return None
        marks = [m for m in (state.index, state.next_index) if m is not None]
        if marks:  # written by a compaction: it must be one of the files it recorded
            if sig[2] not in {m.size for m in marks}:
                raise CorruptIndexError(
                    f"vector file {self.index_path} is {sig[2]} bytes, not "
                    f"{' or '.join(str(m.size) for m in marks)} (truncated or replaced)",
                    path=str(self.index_path),
                )
            if file_mark(self.index_path) not in marks:
                raise CorruptIndexError(
                    f"vector file {self.index_path} fails its checksum",
                    path=str(self.index_path),
                )
        return self._restore()

    def _restore(self) -> Index:
        """``usearch.index`` memory-mapped read-only."""
        try:
            index = Index.restore(str(self.index_path), view=True)
        except (RuntimeError, ValueError) as exc:
            raise CorruptIndexError(
                f"unreadable vector file {self.index_path}: {exc}", path=str(self.index_path)
            ) from exc
        if index is None:
            raise CorruptIndexError(
                f"unreadable vector file {self.index_path}", path=str(self.index_path)
            )
        index.expansion_search = self.settings.ef_search  # type: ignore[misc]
        return index

    def __len__(self) -> int:
        return (len(self.main) if self.main is not None else 0) + len(self.log.rows)

    def search(self, q: np.ndarray, count: int, exact: bool) -> tuple[np.ndarray, np.ndarray]:
        """The ``count`` nearest (keys, usearch distances): the HNSW file's, less keys the
        log holds, merged with an exact scan of the log."""
        keys: list[np.ndarray] = []
        dists: list[np.ndarray] = []
        if self.main is not None and len(self.main):
            m = self.main.search(q, count=count, exact=exact)
            mk = np.asarray(m.keys, dtype=np.uint64).reshape(-1)
            md = np.asarray(m.distances, dtype=np.float64).reshape(-1)
            if self.log.rows:
                keep = np.fromiter((int(k) not in self.log.rows for k in mk), bool, len(mk))
                mk, md = mk[keep], md[keep]
            keys.append(mk)
            dists.append(md)
        if self.log.count:
            pos = self.log.live()
            lk, ld = self._scan(q, pos, count)
            keys.append(lk)
            dists.append(ld)
        if not keys:
            return np.zeros(0, np.uint64), np.zeros(0)
        allk, alld = np.concatenate(keys), np.concatenate(dists)
        order = np.lexsort((allk, alld))[:count]
        return allk[order], alld[order]

    def _scan(self, q: np.ndarray, pos: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """usearch's own distances on the float16-rounded vectors: 1 - dot (IP) or 1 - cos."""
        everything = len(pos) == self.log.count  # no key logged twice: a view, no copy
        vecs = self.log.vectors if everything else self.log.vectors[pos]
        query = np.asarray(q, dtype=np.float16).astype(np.float32).reshape(-1)
        dots = vecs @ query
        if self.metric == MetricKind.Cos:
            norms = np.linalg.norm(vecs, axis=1) * np.linalg.norm(query)
            dots = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
        dist = 1.0 - dots.astype(np.float64)
        take = min(count, len(dist))
        top = np.argpartition(dist, take - 1)[:take] if take < len(dist) else np.arange(len(dist))
        return self.log.keys[pos[top]], dist[top]

    def get(self, keys: np.ndarray) -> np.ndarray:
        """float32 vectors of ``keys`` (the log's where it holds them); a key with a row and
        no vector is corruption."""
        keys = np.asarray(keys, dtype=np.uint64)
        out = np.empty((len(keys), self.info.dim), dtype=np.float32)
        at = self.log.positions(keys)
        logged = at >= 0
        out[logged] = self.log.vectors[at[logged]]
        rest = np.flatnonzero(~logged)
        if len(rest):
            wanted = keys[rest]
            got = self.main.get(wanted, dtype=ScalarKind.F32) if self.main is not None else None
            rows = (got,) if isinstance(got, np.ndarray) else got  # a tuple, one per key
            if rows is not None and all(r is not None for r in rows):
                out[rest] = np.stack(rows).reshape(len(rest), self.info.dim)  # type: ignore[arg-type]
            else:
                raise CorruptIndexError(
                    f"{self.directory}: windows without vectors (keys {wanted[:5].tolist()})",
                    path=str(self.directory),
                )
        return out

    # --- writing (the caller holds the space's flock and an IMMEDIATE transaction) -----

    def add(self, db: sqlite3.Connection, keys: np.ndarray, vectors: np.ndarray) -> VectorState:
        """Append to the log and record its new length, uncommitted: the caller's commit
        makes the rows and their vectors durable together."""
        state = self.refresh(db)
        path = log_path(self.directory, state.generation)
        if not path.exists():
            if state.entries:
                raise CorruptIndexError(
                    f"vector log {path} is missing ({state.entries} vectors committed)",
                    path=str(path),
                )
            create_log(path, self.info.dim, state.generation)
        append(path, self.info.dim, state.entries, keys, vectors)
        state = state.model_copy(update={"entries": state.entries + len(keys)})
        write_state(db, state)
        return state

    def snapshot(self, db: sqlite3.Connection) -> Snapshot:
        """What a compaction folds: the log as committed now and the windows with rows
        (the caller holds the space's lock, not the writers' flock: adds go on)."""
        state = self.refresh(db)
        live = np.fromiter((r[0] for r in db.execute("SELECT id FROM windows")), dtype=np.uint64)
        pos = self.log.live()
        return Snapshot(state, live, self.log.keys[pos].copy(), self.log.vectors[pos].copy())

    def build(self, snap: Snapshot) -> tuple[Path, FileMark]:
        """The new HNSW file, beside the old one, fsync'd, and its mark; no lock needed: only
        a compaction (one at a time: the caller's flock) replaces the old file.
        :mod:`sevensense.index.hoplite_build` builds it, in its worker process when it is
        large (usearch holds the GIL while it loads and saves), and writes it in synced
        chunks, so that an add's fsync of its log waits behind one chunk at most."""
        for stale in self.directory.glob(f".{UINDEX_FILENAME}.*.tmp*"):  # of a killed one
            if stale.is_dir():  # a build job's arrays
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        temp = self.index_path.with_name(f".{UINDEX_FILENAME}.{os.getpid()}.tmp")
        spec = BuildSpec(
            old=str(self.index_path) if self.index_path.exists() else None,
            temp=str(temp),
            dim=self.info.dim,
            metric=self.metric.name,
            connectivity=self.settings.hnsw_m,
            expansion_add=self.settings.ef_construction,
            expansion_search=self.settings.ef_search,
        )
        worker_bytes = self.settings.build_in_worker_mb << 20
        mark = hoplite_build.build(spec, snap.live, snap.keys, snap.vectors, worker_bytes)
        return temp, mark

    def swap(self, db: sqlite3.Connection, snap: Snapshot, temp: Path, mark: FileMark) -> bool:
        """Put the new file in place and start the next log generation with the records
        added since the snapshot; False (nothing changed) if another compaction came first.
        The caller holds the writers' flock and an IMMEDIATE transaction; commits twice."""
        state = self.refresh(db)
        if state.generation != snap.state.generation:
            db.rollback()
            temp.unlink(missing_ok=True)
            return False
        nxt = state.generation + 1
        nxt_path = log_path(self.directory, nxt)
        create_log(nxt_path, self.info.dim, nxt)
        carried = state.entries - snap.state.entries
        if carried:  # in log order, so a key logged twice keeps its last record
            append(
                nxt_path,
                self.info.dim,
                0,
                self.log.keys[snap.state.entries :].copy(),
                self.log.vectors[snap.state.entries :],
            )
        write_state(db, state.model_copy(update={"next_index": mark}))
        db.commit()
        os.replace(temp, self.index_path)
        fsync_dir(self.directory)
        db.execute("BEGIN IMMEDIATE")
        write_state(db, VectorState(generation=nxt, entries=carried, index=mark))
        db.commit()
        for old in self.directory.glob("vectors.*.log"):
            if old.name != nxt_path.name:
                old.unlink(missing_ok=True)
        # this process wrote and checked the file: map it without reading it all again
        self.main = self._restore()
        self._main_sig = file_signature(self.index_path)
        self._loaded = True
        self.log = LogReader(nxt_path, self.info.dim, nxt)
        self.log.load(carried)
        return True


class Snapshot:
    """The committed state a compaction started from, and what it folds."""

    def __init__(
        self, state: VectorState, live: np.ndarray, keys: np.ndarray, vectors: np.ndarray
    ) -> None:
        self.state = state
        self.live = live
        self.keys = keys
        self.vectors = vectors
