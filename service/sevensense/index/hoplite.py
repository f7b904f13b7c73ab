"""The embedded backend: one perch-hoplite database directory per index space.

Written with ``sqlite3`` and ``usearch`` alone, in the layout perch-hoplite 1.0.2 reads
(``perch_hoplite/db/sqlite_usearch_impl.py``: ``hoplite.sqlite`` with its tables and
``hoplite_metadata``, and ``usearch.index`` keyed by window id, float16), with the
``model_config`` and ``audio_sources`` metadata its agile-modeling notebooks expect, so an
ecologist opens the directory with ``SQLiteUSearchDB.create(path)``. Our own bookkeeping
lives where hoplite tolerates it: extra columns (tenant, start in ms, source), which its
reader lists as "extra table columns", one extra index, and our own metadata key.

Mapping: a tenant is a hoplite *project*, a site a *deployment* (name, or "" when none), a
recording id a recording's ``filename``, its start time the recording's ``datetime``;
window ``offsets`` are [start_s, end_s].

Writers serialise on ``flock`` over a sidecar of ``usearch.index``. An add appends its
vectors to a log committed with its rows (:mod:`sevensense.index.hoplite_vectors`), so it
costs the batch, not the index; a compaction (every ``index.compact_after`` logged vectors,
or ``sevensense index compact``) folds the log into ``usearch.index``, which is replaced
atomically (readers keep their memory map of the old one). Deleting removes rows; their
vectors are ignored by searches and dropped by the next compaction.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

# onnxruntime is imported before usearch: with usearch 2.26.6 loaded first, importing
# onnxruntime 1.31.1 in the same process crashes (SIGSEGV, measured here); in this order
# both work.
import onnxruntime  # noqa: F401

from sevensense.errors import (
    DimensionMismatchError,
    IndexEmptyError,
    IndexNotFoundError,
    VectorIndexError,
)
from sevensense.index.events import compacted
from sevensense.index.hoplite_scopes import ScopeCache, WindowTable, top
from sevensense.index.hoplite_vectors import UINDEX_FILENAME, SpaceVectors
from sevensense.index.ranking import candidates, rank
from sevensense.index.records import (
    EntryBatch,
    Metric,
    Neighbour,
    RecordingRef,
    Scope,
    SearchFilter,
    SpaceInfo,
    SpaceKey,
    SpaceStats,
    check_dim,
    check_index_name,
    escape_like,
)
from sevensense.index.vector_log import fsync_dir
from sevensense.settings import IndexSettings
from sevensense.storage.atomic import exclusive_lock

HOPLITE_FILENAME = "hoplite.sqlite"
COMPACT_LOCK = "compaction"  # flock'd as compaction.lock: one compaction per space at a time
SPACE_META_KEY = "sevensense_space"

# perch-hoplite 1.0.2's schema, verbatim (SQLiteUSearchDB._setup_tables).
_HOPLITE_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS hoplite_metadata (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS deployments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        project TEXT NOT NULL,
        latitude REAL,
        longitude REAL,
        UNIQUE (name, project)
    )""",
    """CREATE TABLE IF NOT EXISTS recordings (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        filename TEXT NOT NULL,
        datetime TEXT,
        deployment_id INTEGER REFERENCES deployments(id) ON DELETE CASCADE,
        UNIQUE (id, deployment_id),
        UNIQUE (filename, deployment_id)
    )""",
    """CREATE TABLE IF NOT EXISTS windows (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        recording_id INTEGER NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
        offsets FLOAT_LIST NOT NULL,
        UNIQUE (id, recording_id, offsets)
    )""",
    """CREATE TABLE IF NOT EXISTS annotations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        recording_id INTEGER NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
        offsets FLOAT_LIST NOT NULL,
        label TEXT NOT NULL,
        label_type INTEGER NOT NULL,
        provenance TEXT NOT NULL,
        UNIQUE (id, recording_id, offsets)
    )""",
    """CREATE INDEX IF NOT EXISTS idx_annotations
        ON annotations(recording_id, offsets, label, label_type, provenance)""",
    "CREATE INDEX IF NOT EXISTS idx_labels ON annotations(label, label_type, provenance)",
    "CREATE INDEX IF NOT EXISTS idx_recordings_deployment_id ON recordings(deployment_id)",
    "CREATE INDEX IF NOT EXISTS idx_windows_recording_id ON windows(recording_id)",
)
# Ours: extra columns (types hoplite's reader maps: INTEGER, REAL, TEXT) and indexes.
_EXTRA_SCHEMA = (
    "ALTER TABLE recordings ADD COLUMN tenant TEXT",
    "ALTER TABLE recordings ADD COLUMN source TEXT",
    "ALTER TABLE windows ADD COLUMN tenant TEXT",
    "ALTER TABLE windows ADD COLUMN start_ms INTEGER",
    "CREATE UNIQUE INDEX IF NOT EXISTS sevensense_window_key ON windows(recording_id, start_ms)",
    "CREATE INDEX IF NOT EXISTS sevensense_windows_tenant ON windows(tenant)",
    "CREATE INDEX IF NOT EXISTS sevensense_recordings_filename ON recordings(filename)",
)

log = logging.getLogger(__name__)

_PERCH_KEYS = {"perch-v2": "perch_v2_onnx"}


def _offsets(start_s: float, end_s: float) -> bytes:
    """hoplite's FLOAT_LIST: little-endian float64."""
    return np.array([start_s, end_s], dtype="<f8").tobytes()


def model_config(info: SpaceInfo) -> dict[str, Any]:
    """hoplite's ``ModelConfig`` (agile/embed.py): the model key its zoo knows for Perch 2.0
    on ONNX, else ours; the wrapper's arguments as its presets spell them."""
    inner: dict[str, Any] = {
        "sample_rate": info.sample_rate,
        "window_size_s": info.window_s,
        "hop_size_s": info.hop_s,
    }
    if info.key.model_name == "perch-v2":
        inner["peak_norm"] = 0.25
    return {
        "model_key": _PERCH_KEYS.get(info.key.model_name, f"sevensense:{info.key.model_name}"),
        "embedding_dim": info.dim,
        "model_config": inner,
        "logits_key": None,
        "logits_idxes": None,
    }


def audio_sources() -> dict[str, Any]:
    """hoplite's ``AudioSources``: recordings' ``filename`` is our recording id, which for
    files embedded by the CLI is their path as given (absolute paths join to themselves)."""
    return {
        "audio_globs": [
            {
                "dataset_name": "sevensense",
                "base_path": "",
                "file_glob": "**/*",
                "min_audio_len_s": 0.0,
                "target_sample_rate_hz": -2,
                "shard_len_s": None,
                "max_shards_per_file": None,
            }
        ]
    }


class _Space:
    """One open space: its SQLite connection and its vectors (HNSW file and append log)."""

    def __init__(self, directory: Path, info: SpaceInfo, settings: IndexSettings) -> None:
        self.directory = directory
        self.info = info
        self.lock = threading.RLock()
        self.db = sqlite3.connect(directory / HOPLITE_FILENAME, check_same_thread=False)
        self.db.execute("PRAGMA busy_timeout = 30000")
        self.vectors = SpaceVectors(directory, info, settings)
        self.table = WindowTable()
        self._compactor: threading.Thread | None = None
        self._compactor_lock = threading.Lock()
        self.scopes = ScopeCache(settings.scope_cache_mb << 20)

    @property
    def lock_path(self) -> Path:
        return self.directory / UINDEX_FILENAME

    def compact(self, index_name: str, at_least: int = 0) -> float | None:
        """Fold the log into a new ``usearch.index`` (see hoplite_vectors): adds wait only for
        the swap at the end, not the build. None: nothing done (the log held fewer than
        ``at_least`` records, or another process compacted first)."""
        with exclusive_lock(self.directory / COMPACT_LOCK):
            started = time.perf_counter()
            with self.lock:
                snap = self.vectors.snapshot(self.db)
            if snap.state.entries < at_least:
                return None
            temp, mark = self.vectors.build(snap)
            with self.lock, exclusive_lock(self.lock_path):
                try:
                    self.db.execute("BEGIN IMMEDIATE")
                    done = self.vectors.swap(self.db, snap, temp, mark)
                except BaseException:
                    self.db.rollback()
                    temp.unlink(missing_ok=True)
                    raise
            seconds = time.perf_counter() - started
        if not done:
            return None
        compacted(index_name, self.info.key.slug, seconds)
        return seconds

    def compact_later(self, index_name: str, at_least: int) -> None:
        """A compaction on this space's own thread, unless one is running already."""
        with self._compactor_lock:
            if self._compactor is not None and self._compactor.is_alive():
                return
            self._compactor = threading.Thread(
                target=self._compact_quietly,
                args=(index_name, at_least),
                name=f"compact-{self.info.key.slug}",
                daemon=True,
            )
            self._compactor.start()

    def _compact_quietly(self, index_name: str, at_least: int) -> None:
        try:
            self.compact(index_name, at_least)
        except Exception:  # the next add past the threshold tries again
            log.exception("background compaction of %s failed", self.directory)

    def compacting(self) -> bool:
        with self._compactor_lock:
            return self._compactor is not None and self._compactor.is_alive()

    def wait(self) -> None:
        """Until a background compaction has finished."""
        with self._compactor_lock:
            running = self._compactor
        if running is not None:
            running.join()

    def close(self) -> None:
        self.wait()
        with self.lock:
            self.db.close()


class HopliteIndex:
    """A named index of perch-hoplite directories: ``<root>/<name>/<space slug>/``."""

    backend = "hoplite"

    def __init__(self, root: Path, name: str, settings: IndexSettings) -> None:
        self.name = check_index_name(name)
        self.root = root / name
        self.settings = settings
        self._open: dict[str, _Space] = {}
        self._lock = threading.Lock()

    # --- spaces -----------------------------------------------------------------------------

    def _create(self, info: SpaceInfo) -> None:
        directory = self.root / info.key.slug
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / HOPLITE_FILENAME
        with exclusive_lock(directory / UINDEX_FILENAME):
            if target.is_file():
                return
            # built aside and moved into place: a crash never leaves a half-made database
            temp = directory / f".{HOPLITE_FILENAME}.{os.getpid()}.tmp"
            temp.unlink(missing_ok=True)
            db = sqlite3.connect(temp)
            try:
                db.execute("PRAGMA journal_mode = WAL")
                for statement in (*_HOPLITE_SCHEMA, *_EXTRA_SCHEMA):
                    db.execute(statement)
                usearch_cfg = {
                    "embedding_dim": info.dim,
                    "dtype": "float16",
                    "metric_name": "IP" if info.metric == "cosine" else "Cos",
                    "expansion_add": self.settings.ef_construction,
                    "expansion_search": self.settings.ef_search,
                }
                metadata = {
                    "usearch_config": usearch_cfg,
                    "model_config": model_config(info),
                    "audio_sources": audio_sources(),
                    SPACE_META_KEY: info.model_dump(mode="json"),
                }
                db.executemany(
                    "INSERT OR REPLACE INTO hoplite_metadata (key, value) VALUES (?, ?)",
                    [(k, json.dumps(v)) for k, v in metadata.items()],
                )
                db.commit()
            finally:
                db.close()
            with open(temp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(temp, target)
            fsync_dir(directory)

    def _handle(self, key: SpaceKey) -> _Space:
        slug = key.slug
        with self._lock:
            handle = self._open.get(slug)
            if handle is not None:
                return handle
            directory = self.root / slug
            if not (directory / HOPLITE_FILENAME).is_file():
                if not self.root.is_dir():
                    raise IndexNotFoundError(f"no index named {self.name!r}", index=self.name)
                raise IndexNotFoundError(
                    f"index {self.name!r} has no space for {key}", index=self.name, space=slug
                )
            info = _read_info(directory)
            handle = _Space(directory, info, self.settings)
            self._open[slug] = handle
            return handle

    def ensure_space(self, info: SpaceInfo) -> SpaceInfo:
        try:
            existing = self._handle(info.key).info
        except IndexNotFoundError:
            self._create(info)
            existing = self._handle(info.key).info
        if existing.dim != info.dim:
            raise DimensionMismatchError(
                f"the space {info.key} holds vectors of width {existing.dim}, not {info.dim}",
                expected=existing.dim,
                got=info.dim,
            )
        return existing

    def space(self, key: SpaceKey) -> SpaceInfo:
        return self._handle(key).info

    def spaces(self) -> list[SpaceInfo]:
        if not self.root.is_dir():
            return []
        return [
            _read_info(d) for d in sorted(self.root.iterdir()) if (d / HOPLITE_FILENAME).is_file()
        ]

    def recordings(self, key: SpaceKey) -> list[RecordingRef]:
        handle = self._handle(key)
        with handle.lock:
            rows = handle.db.execute(
                "SELECT r.filename, r.source, r.tenant, d.name, r.datetime, "
                "(SELECT COUNT(*) FROM windows w WHERE w.recording_id = r.id) "
                "FROM recordings r LEFT JOIN deployments d ON r.deployment_id = d.id ORDER BY r.id"
            ).fetchall()
        return [
            RecordingRef(
                recording_id=r[0],
                source=r[1] or "",
                tenant=r[2] or "",
                site=r[3] or None,
                time=datetime.fromisoformat(r[4]) if r[4] else None,
                windows=r[5],
            )
            for r in rows
            if r[5]
        ]

    def drop_space(self, key: SpaceKey) -> None:
        with self._lock:
            handle = self._open.pop(key.slug, None)
        if handle is not None:
            handle.close()
        directory = self.root / key.slug
        with exclusive_lock(directory / UINDEX_FILENAME):
            shutil.rmtree(directory, ignore_errors=True)

    # --- writing ----------------------------------------------------------------------------

    def add(self, info: SpaceInfo, batch: EntryBatch) -> int:
        space = self.ensure_space(info)
        check_dim(batch.vectors, space)
        if not len(batch):
            return 0
        handle = self._handle(space.key)
        with handle.lock, exclusive_lock(handle.lock_path):
            db = handle.db
            try:
                db.execute("BEGIN IMMEDIATE")
                new_ids: list[int] = []
                rows: list[int] = []
                recordings: dict[tuple[str, str, str], int] = {}
                for i, meta in enumerate(batch.meta):
                    rkey = (meta.tenant, meta.site or "", meta.recording_id)
                    rec = recordings.get(rkey)
                    if rec is None:
                        rec = _recording_row(db, meta.tenant, meta.site, meta)
                        recordings[rkey] = rec
                    got = db.execute(
                        "INSERT INTO windows (recording_id, offsets, tenant, start_ms) "
                        "VALUES (?, ?, ?, ?) ON CONFLICT (recording_id, start_ms) DO NOTHING "
                        "RETURNING id",
                        (rec, _offsets(meta.start_s, meta.end_s), meta.tenant, meta.start_ms),
                    ).fetchone()
                    if got is not None:
                        new_ids.append(int(got[0]))
                        rows.append(i)
                logged = 0
                if new_ids:
                    keys = np.asarray(new_ids, dtype=np.uint64)
                    logged = handle.vectors.add(db, keys, batch.vectors[rows]).entries
                db.commit()
            except sqlite3.Error as exc:
                db.rollback()
                raise VectorIndexError(f"index {self.name!r}: {exc}") from exc
            except BaseException:
                db.rollback()
                raise
        if logged >= self.settings.compact_after:
            if self.settings.compact_in_background:
                handle.compact_later(self.name, self.settings.compact_after)
            else:
                handle.compact(self.name)
        return len(new_ids)

    def delete_recording(self, recording_id: str, scope: Scope) -> int:
        """Rows only: the vectors left behind have no row, so searches skip them and the
        next compaction drops them."""
        removed = 0
        for info in self.spaces():
            handle = self._handle(info.key)
            with handle.lock, exclusive_lock(handle.lock_path):
                db = handle.db
                try:
                    db.execute("BEGIN IMMEDIATE")
                    sql = "SELECT w.id FROM windows w JOIN recordings r ON w.recording_id = r.id "
                    sql += "WHERE r.filename = ?"
                    params: list[Any] = [recording_id]
                    if scope.tenant is not None:
                        sql += " AND r.tenant = ?"
                        params.append(scope.tenant)
                    ids = [int(r[0]) for r in db.execute(sql, params)]
                    if ids:
                        handle.table.forget(np.asarray(ids, dtype=np.uint64))
                        db.executemany("DELETE FROM windows WHERE id = ?", [(i,) for i in ids])
                        db.execute(
                            "DELETE FROM recordings WHERE filename = ? AND NOT EXISTS "
                            "(SELECT 1 FROM windows w WHERE w.recording_id = recordings.id)",
                            (recording_id,),
                        )
                    db.commit()
                    removed += len(ids)
                except BaseException:
                    db.rollback()
                    raise
        return removed

    def compact(self) -> dict[str, float]:
        """Fold every space's log into its ``usearch.index`` (what perch-hoplite reads) and
        drop deleted vectors; seconds per space."""
        done = {info.key.slug: self._handle(info.key).compact(self.name) for info in self.spaces()}
        return {slug: seconds for slug, seconds in done.items() if seconds is not None}

    def compacting(self) -> bool:
        """Whether a background compaction of this process is running."""
        with self._lock:
            handles = list(self._open.values())
        return any(handle.compacting() for handle in handles)

    def wait_compactions(self) -> None:
        """Until this process's background compactions have finished."""
        with self._lock:
            handles = list(self._open.values())
        for handle in handles:
            handle.wait()

    # --- reading ----------------------------------------------------------------------------

    def search(
        self,
        key: SpaceKey,
        queries: np.ndarray,
        k: int,
        scope: Scope,
        flt: SearchFilter | None = None,
        metric: Metric = "cosine",
    ) -> list[list[Neighbour]]:
        handle = self._handle(key)
        info = handle.info
        qs = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        check_dim(qs, info)
        flt = flt or SearchFilter()
        with handle.lock:
            db = handle.db
            index = handle.vectors
            restricted = scope.tenant is not None or not flt.empty
            if restricted:  # rows before vectors: every row read then has its vector
                handle.table.refresh(db)
            index.refresh(db)
            sql, args = "SELECT 1 FROM windows LIMIT 1", tuple[str, ...]()
            if scope.tenant is not None:
                sql, args = "SELECT 1 FROM windows WHERE tenant = ? LIMIT 1", (scope.tenant,)
            nothing = len(index) == 0 or db.execute(sql, args).fetchone() is None
            if nothing:
                raise IndexEmptyError(
                    f"the space {key} of index {self.name!r} holds nothing this key may search",
                    index=self.name,
                    space=key.slug,
                )
            if not restricted:
                found = [self._approximate(db, index, q, k, metric, info) for q in qs]
            else:
                found = self._filtered(handle, qs, k, metric, scope, flt)
            return [self._neighbours(db, info, hits) for hits in found]

    def _filtered(
        self,
        handle: _Space,
        qs: np.ndarray,
        k: int,
        metric: Metric,
        scope: Scope,
        flt: SearchFilter,
    ) -> list[list[tuple[int, float, float]]]:
        """Exact over a scope of at most ``exact_below`` windows (its cached block), else the
        HNSW over-fetched by the scope's share of the space, filtered in memory."""
        db, index, table = handle.db, handle.vectors, handle.table
        where, params = _where(scope, flt, tenant="r.tenant")
        scope_key = (where, *params)

        def recordings() -> np.ndarray:
            sql = f"SELECT r.id {_FROM_RECORDINGS} {where}"
            return np.fromiter((r[0] for r in db.execute(sql, params)), np.int64)

        mask, allowed = handle.scopes.mask(scope_key, table, recordings)
        if allowed == 0:
            return [[] for _ in qs]
        want = candidates(k, metric)
        out = []
        for q in qs:
            while True:
                if allowed <= self.settings.exact_below:
                    parts = handle.scopes.block(scope_key, table, mask, index.get)
                    hits = [(kk, s, 1.0 - s) for kk, s in top(q, parts, want)]
                else:
                    hits = self._overfetch(index, table, mask, allowed, q, want)
                live = _live(db, np.asarray([h[0] for h in hits], dtype=np.int64), "", [])
                dead = [h[0] for h in hits if h[0] not in live]
                if not dead:
                    break
                table.forget(np.asarray(dead, dtype=np.uint64))  # deleted by another process
                mask, allowed = handle.scopes.mask(scope_key, table, recordings)
            out.append(_final(index, hits, q, k, metric, handle.info))
        return out

    def _overfetch(
        self,
        index: SpaceVectors,
        table: WindowTable,
        mask: np.ndarray,
        allowed: int,
        q: np.ndarray,
        want: int,
    ) -> list[tuple[int, float, float]]:
        total = len(index)
        count = min(total, max(want * 4, 2 * want * total // allowed))
        while True:
            found, dists = index.search(q, count, False)
            pos = table.find(found)
            ok = pos >= 0
            ok[ok] = mask[pos[ok]]
            hits = [
                (int(kk), 1.0 - float(d), float(d))
                for kk, d in zip(found[ok], dists[ok], strict=True)
            ]
            if len(hits) >= want or count >= total:
                return hits[:want]
            count = min(total, count * 4)

    def _approximate(
        self,
        db: sqlite3.Connection,
        index: SpaceVectors,
        q: np.ndarray,
        k: int,
        metric: Metric,
        info: SpaceInfo,
    ) -> list[tuple[int, float, float]]:
        want = candidates(k, metric)
        exact = len(index) <= self.settings.exact_below
        count = want
        while True:
            found, dists = index.search(q, count, exact)
            keys = found.astype(np.int64)
            # rows are checked: deleted windows keep vectors until compaction
            live = _live(db, keys, "", [])
            hits = [
                (int(kk), 1.0 - float(d), float(d))
                for kk, d in zip(keys, dists, strict=True)
                if kk in live
            ]
            if len(hits) >= want or count >= len(index):
                return _final(index, hits[:want], q, k, metric, info)
            count = min(len(index), count * 4)

    def _neighbours(
        self, db: sqlite3.Connection, info: SpaceInfo, hits: list[tuple[int, float, float]]
    ) -> list[Neighbour]:
        if not hits:
            return []
        ids = [h[0] for h in hits]
        marks = ",".join("?" * len(ids))
        rows = {
            int(r[0]): r
            for r in db.execute(
                "SELECT w.id, r.filename, r.source, w.offsets, r.tenant, d.name, r.datetime "
                "FROM windows w JOIN recordings r ON w.recording_id = r.id "
                f"LEFT JOIN deployments d ON r.deployment_id = d.id WHERE w.id IN ({marks})",
                ids,
            )
        }
        out: list[Neighbour] = []
        for wid, score, dist in hits:
            row = rows.get(wid)
            if row is None:
                continue
            start, end = np.frombuffer(row[3], dtype="<f8")[:2]
            out.append(
                Neighbour(
                    recording_id=row[1],
                    source=row[2] or "",
                    start_s=float(start),
                    end_s=float(end),
                    score=score,
                    distance=dist,
                    model_name=info.key.model_name,
                    model_version=info.key.model_version,
                    tenant=row[4] or "",
                    site=row[5] or None,
                    time=datetime.fromisoformat(row[6]) if row[6] else None,
                )
            )
        return out

    def window_vectors(self, key: SpaceKey, ids: np.ndarray) -> np.ndarray:
        """Stored vectors by window id, float32 [n, dim] (labels train on them)."""
        handle = self._handle(key)
        with handle.lock:
            if not len(ids):
                return np.zeros((0, handle.info.dim), dtype=np.float32)
            handle.vectors.refresh(handle.db)
            return handle.vectors.get(np.asarray(ids, dtype=np.uint64))

    def stats(self) -> list[SpaceStats]:
        out = []
        for info in self.spaces():
            handle = self._handle(info.key)
            with handle.lock:
                entries, recordings, tenants = handle.db.execute(
                    "SELECT COUNT(*), COUNT(DISTINCT recording_id), COUNT(DISTINCT tenant) "
                    "FROM windows"
                ).fetchone()
            size = sum(p.stat().st_size for p in handle.directory.iterdir() if p.is_file())
            out.append(
                SpaceStats(
                    index=self.name,
                    backend=self.backend,
                    space=info,
                    entries=entries,
                    recordings=recordings,
                    tenants=tenants,
                    size_bytes=size,
                )
            )
        return out

    def close(self) -> None:
        with self._lock:
            for handle in self._open.values():
                handle.close()
            self._open.clear()


_FROM = (
    "FROM windows w JOIN recordings r ON w.recording_id = r.id "
    "LEFT JOIN deployments d ON r.deployment_id = d.id"
)


_FROM_RECORDINGS = "FROM recordings r LEFT JOIN deployments d ON r.deployment_id = d.id"


def _where(scope: Scope, flt: SearchFilter, tenant: str = "w.tenant") -> tuple[str, list[Any]]:
    conditions: list[str] = []
    params: list[Any] = []
    if scope.tenant is not None:
        conditions.append(f"{tenant} = ?")
        params.append(scope.tenant)
    if flt.recording_prefix:
        conditions.append("r.filename LIKE ? ESCAPE '\\'")
        params.append(escape_like(flt.recording_prefix))
    if flt.site is not None:
        conditions.append("d.name = ?")
        params.append(flt.site)
    if flt.time_from is not None:
        conditions.append("r.datetime >= ?")
        params.append(_iso(flt.time_from))
    if flt.time_to is not None:
        conditions.append("r.datetime <= ?")
        params.append(_iso(flt.time_to))
    return ("WHERE " + " AND ".join(conditions) if conditions else ""), params


def _iso(value: datetime) -> str:
    """Times are stored as UTC ISO strings so that they compare as text."""
    from datetime import UTC

    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


def _live(db: sqlite3.Connection, keys: np.ndarray, where: str, params: list[Any]) -> set[int]:
    """The keys that have rows (and pass the filter)."""
    found: set[int] = set()
    ids = [int(x) for x in keys if x >= 0]
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        cond = f"w.id IN ({marks})"
        sql = f"SELECT w.id {_FROM} " + (f"{where} AND {cond}" if where else f"WHERE {cond}")
        found.update(int(r[0]) for r in db.execute(sql, [*params, *chunk]))
    return found


def _final(
    index: SpaceVectors,
    hits: list[tuple[int, float, float]],
    q: np.ndarray,
    k: int,
    metric: Metric,
    info: SpaceInfo,
) -> list[tuple[int, float, float]]:
    """Cosine hits as they are (best k); Poincaré: the candidates re-ranked on the ball."""
    hits = sorted(hits, key=lambda h: (-h[1], h[0]))
    if metric == "cosine" or not hits:
        return hits[:k]
    keys = np.asarray([h[0] for h in hits], dtype=np.uint64)
    vecs = index.get(keys)
    pos, score, dist = rank(q, vecs, k, "poincare", info.curvature)
    return [(int(keys[p]), float(s), float(d)) for p, s, d in zip(pos, score, dist, strict=True)]


def _recording_row(db: sqlite3.Connection, tenant: str, site: str | None, meta: Any) -> int:
    db.execute(
        "INSERT INTO deployments (name, project) VALUES (?, ?) ON CONFLICT DO NOTHING",
        (site or "", tenant),
    )
    dep = db.execute(
        "SELECT id FROM deployments WHERE name = ? AND project = ?", (site or "", tenant)
    ).fetchone()[0]
    row = db.execute(
        "SELECT id FROM recordings WHERE filename = ? AND deployment_id = ?",
        (meta.recording_id, dep),
    ).fetchone()
    if row is not None:
        return int(row[0])
    cur = db.execute(
        "INSERT INTO recordings (filename, datetime, deployment_id, tenant, source) "
        "VALUES (?, ?, ?, ?, ?)",
        (meta.recording_id, _iso(meta.time) if meta.time else None, dep, tenant, meta.source),
    )
    assert cur.lastrowid is not None
    return int(cur.lastrowid)


def _read_info(directory: Path) -> SpaceInfo:
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{directory / HOPLITE_FILENAME}?mode=ro", uri=True)
        ) as db:
            row = db.execute(
                "SELECT value FROM hoplite_metadata WHERE key = ?", (SPACE_META_KEY,)
            ).fetchone()
    except sqlite3.Error as exc:
        raise VectorIndexError(f"unreadable index space {directory}: {exc}") from exc
    if row is None:
        raise VectorIndexError(f"{directory} is a hoplite database not written by sevensense")
    return SpaceInfo.model_validate(json.loads(row[0]))


def iter_space_dirs(root: Path) -> Iterator[Path]:
    if root.is_dir():
        yield from (d for d in sorted(root.iterdir()) if (d / HOPLITE_FILENAME).is_file())
