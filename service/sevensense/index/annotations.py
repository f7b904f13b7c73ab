"""Labels on indexed windows (agile modeling): which windows hold a call type, which do not.

An annotation names one window of one space by its window id, or a recording and a time
span that is resolved to the windows it covers (see :func:`covers`); it is stored once per
(window, label, provenance): labelling again with the same type changes nothing, with
another type replaces the type. Tenancy follows the window: a caller labels, lists and
deletes only its tenant's windows; a window of another tenant is "not found".

On the hoplite backend annotations are rows of perch-hoplite 1.0.2's own ``annotations``
table (recording row, the window's ``offsets``, label, ``label_type`` 0/1/2 as its
``LabelType``, provenance), so its ``DataManager`` trains on them. On pgvector they live in
one table, ``sevensense_annotations``, keyed by index, space and window id.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sevensense.errors import RequestError, WindowNotFoundError
from sevensense.index.base import VectorIndex
from sevensense.index.records import Scope, SpaceKey

LabelTypeName = Literal["positive", "negative", "uncertain"]
PG_TABLE = "sevensense_annotations"
MAX_LABEL = 128
MAX_WINDOW_ID = 2**63 - 1  # window and annotation ids are SQL BIGINTs on both backends


class LabelType(IntEnum):
    """perch-hoplite's ``LabelType`` values, stored as they are."""

    negative = 0
    positive = 1
    uncertain = 2


class AnnotationIn(BaseModel):
    """One label to store: a window by id, or a recording and a span."""

    model_config = ConfigDict(extra="forbid")

    window_id: int | None = Field(None, ge=0, le=MAX_WINDOW_ID)
    recording_id: str | None = Field(None, min_length=1, max_length=1024)
    start_s: float | None = Field(None, ge=0.0)
    end_s: float | None = Field(None, ge=0.0)
    label: str = Field(min_length=1, max_length=MAX_LABEL)
    type: LabelTypeName = "positive"
    provenance: str = Field("api", min_length=1, max_length=256)

    @model_validator(mode="after")
    def _target(self) -> AnnotationIn:
        by_span = self.recording_id is not None
        if (self.window_id is None) == (not by_span):
            raise ValueError("name a window_id, or a recording_id with start_s and end_s")
        if by_span and (self.start_s is None or self.end_s is None):
            raise ValueError("a recording_id needs start_s and end_s")
        if by_span and self.end_s is not None and self.end_s <= (self.start_s or 0.0):
            raise ValueError("end_s must be after start_s")
        return self


class Annotation(BaseModel):
    id: int
    window_id: int
    recording_id: str
    start_s: float
    end_s: float
    label: str
    type: LabelTypeName
    provenance: str
    tenant: str


class AnnotateResult(BaseModel):
    added: int
    updated: int
    unchanged: int
    annotations: list[Annotation]


@dataclass(frozen=True)
class IndexedWindow:
    window_id: int
    recording_id: str
    source: str
    tenant: str
    start_s: float
    end_s: float


def covers(w_start: float, w_end: float, start: float, end: float) -> bool:
    """A span labels a window it overlaps by at least half the shorter of the two: a short
    call inside a window labels it, a long selection labels the windows mostly inside it."""
    overlap = min(w_end, end) - max(w_start, start)
    return overlap > 0 and overlap >= 0.5 * min(w_end - w_start, end - start) - 1e-9


class AnnotationStore(Protocol):
    def windows(
        self, key: SpaceKey, scope: Scope, ids: list[int] | None = None
    ) -> list[IndexedWindow]:
        """The scope's windows (those of ``ids`` only, when given), by window id."""
        ...

    def vectors(self, key: SpaceKey, ids: np.ndarray) -> np.ndarray: ...

    def annotate(self, key: SpaceKey, items: list[AnnotationIn], scope: Scope) -> AnnotateResult:
        """``WindowNotFoundError`` (404) when an item names no window of the scope."""
        ...

    def annotations(
        self, key: SpaceKey, scope: Scope, label: str | None = None
    ) -> list[Annotation]: ...

    def delete(
        self, key: SpaceKey, scope: Scope, ids: list[int] | None = None, label: str | None = None
    ) -> int: ...


def annotation_store(index: VectorIndex) -> AnnotationStore:
    """The store beside an open index, on its backend."""
    if index.backend == "pgvector":
        return PgAnnotations(index)
    return HopliteAnnotations(index)


def _resolve(
    item: AnnotationIn, windows: list[IndexedWindow], by_id: dict[int, IndexedWindow]
) -> list[IndexedWindow]:
    if item.window_id is not None:
        found = by_id.get(item.window_id)
        if found is None:
            raise WindowNotFoundError(
                f"no window {item.window_id} in this space for this key", window_id=item.window_id
            )
        return [found]
    assert item.start_s is not None and item.end_s is not None
    hits = [
        w
        for w in windows
        if w.recording_id == item.recording_id
        and covers(w.start_s, w.end_s, item.start_s, item.end_s)
    ]
    if not hits:
        raise WindowNotFoundError(
            f"no indexed window of recording {item.recording_id!r} covers "
            f"{item.start_s:g}-{item.end_s:g} s for this key",
            recording_id=item.recording_id,
        )
    return hits


def _plan(
    items: list[AnnotationIn], windows: list[IndexedWindow]
) -> list[tuple[IndexedWindow, AnnotationIn]]:
    """Every (window, item) to store, duplicates within the request dropped (last wins)."""
    if not items:
        raise RequestError("no annotations given")
    by_id = {w.window_id: w for w in windows}
    planned: dict[tuple[int, str, str], tuple[IndexedWindow, AnnotationIn]] = {}
    for item in items:
        for w in _resolve(item, windows, by_id):
            planned[(w.window_id, item.label, item.provenance)] = (w, item)
    return list(planned.values())


# --- perch-hoplite directories ----------------------------------------------------------------


class HopliteAnnotations:
    def __init__(self, index: Any) -> None:
        self.root: Path = index.root
        self.index = index

    @contextlib.contextmanager
    def _db(self, key: SpaceKey) -> Iterator[sqlite3.Connection]:
        self.index.space(key)  # IndexNotFoundError when absent
        db = sqlite3.connect(self.root / key.slug / "hoplite.sqlite", timeout=30.0)
        try:
            yield db
        finally:
            db.close()

    def windows(
        self, key: SpaceKey, scope: Scope, ids: list[int] | None = None
    ) -> list[IndexedWindow]:
        with self._db(key) as db:
            return _hoplite_windows(db, scope, ids)

    def vectors(self, key: SpaceKey, ids: np.ndarray) -> np.ndarray:
        return np.asarray(self.index.window_vectors(key, ids), dtype=np.float32)

    def annotate(self, key: SpaceKey, items: list[AnnotationIn], scope: Scope) -> AnnotateResult:
        added = updated = unchanged = 0
        with self._db(key) as db:
            windows = _hoplite_windows(db, scope, None)
            plan = _plan(items, windows)
            db.execute("BEGIN IMMEDIATE")
            try:
                for w, item in plan:
                    rec, offsets = _hoplite_window_row(db, w.window_id)
                    kind = int(LabelType[item.type])
                    row = db.execute(
                        "SELECT id, label_type FROM annotations WHERE recording_id = ? AND "
                        "offsets = ? AND label = ? AND provenance = ?",
                        (rec, offsets, item.label, item.provenance),
                    ).fetchone()
                    if row is None:
                        db.execute(
                            "INSERT INTO annotations (recording_id, offsets, label, label_type, "
                            "provenance) VALUES (?, ?, ?, ?, ?)",
                            (rec, offsets, item.label, kind, item.provenance),
                        )
                        added += 1
                    elif int(row[1]) != kind:
                        db.execute(
                            "UPDATE annotations SET label_type = ? WHERE id = ?", (kind, row[0])
                        )
                        updated += 1
                    else:
                        unchanged += 1
                db.commit()
            except BaseException:
                db.rollback()
                raise
            ids = {w.window_id for w, _ in plan}
            stored = [a for a in _hoplite_annotations(db, scope, None) if a.window_id in ids]
        return AnnotateResult(added=added, updated=updated, unchanged=unchanged, annotations=stored)

    def annotations(
        self, key: SpaceKey, scope: Scope, label: str | None = None
    ) -> list[Annotation]:
        with self._db(key) as db:
            return _hoplite_annotations(db, scope, label)

    def delete(
        self, key: SpaceKey, scope: Scope, ids: list[int] | None = None, label: str | None = None
    ) -> int:
        with self._db(key) as db:
            doomed = [
                a.id
                for a in _hoplite_annotations(db, scope, label)
                if ids is None or a.id in set(ids)
            ]
            db.executemany("DELETE FROM annotations WHERE id = ?", [(i,) for i in doomed])
            db.commit()
        return len(doomed)


def _offsets_of(blob: bytes) -> tuple[float, float]:
    start, end = np.frombuffer(blob, dtype="<f8")[:2]
    return float(start), float(end)


def _hoplite_windows(
    db: sqlite3.Connection, scope: Scope, ids: list[int] | None
) -> list[IndexedWindow]:
    sql = (
        "SELECT w.id, r.filename, r.source, r.tenant, w.offsets FROM windows w "
        "JOIN recordings r ON w.recording_id = r.id"
    )
    conditions: list[str] = []
    params: list[object] = []
    if scope.tenant is not None:
        conditions.append("r.tenant = ?")
        params.append(scope.tenant)
    if ids is not None:
        conditions.append(f"w.id IN ({','.join('?' * len(ids))})")
        params.extend(ids)
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    out = []
    for wid, filename, source, tenant, blob in db.execute(sql + " ORDER BY w.id", params):
        start, end = _offsets_of(blob)
        out.append(IndexedWindow(int(wid), filename, source or "", tenant or "", start, end))
    return out


def _hoplite_window_row(db: sqlite3.Connection, window_id: int) -> tuple[int, bytes]:
    row = db.execute("SELECT recording_id, offsets FROM windows WHERE id = ?", (window_id,))
    found = row.fetchone()
    if found is None:
        raise WindowNotFoundError(f"window {window_id} was deleted", window_id=window_id)
    return int(found[0]), bytes(found[1])


def _hoplite_annotations(
    db: sqlite3.Connection, scope: Scope, label: str | None
) -> list[Annotation]:
    """Annotations joined to the window with the same recording and offsets (ours always
    are: a span is stored per window it covers)."""
    sql = (
        "SELECT a.id, w.id, r.filename, a.offsets, a.label, a.label_type, a.provenance, r.tenant "
        "FROM annotations a JOIN recordings r ON a.recording_id = r.id "
        "JOIN windows w ON w.recording_id = a.recording_id AND w.offsets = a.offsets"
    )
    conditions, params = [], []
    if scope.tenant is not None:
        conditions.append("r.tenant = ?")
        params.append(scope.tenant)
    if label is not None:
        conditions.append("a.label = ?")
        params.append(label)
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    out = []
    for aid, wid, filename, blob, lab, kind, prov, tenant in db.execute(
        sql + " ORDER BY a.id", params
    ):
        start, end = _offsets_of(blob)
        out.append(
            Annotation(
                id=int(aid),
                window_id=int(wid),
                recording_id=filename,
                start_s=start,
                end_s=end,
                label=lab,
                type=LabelType(int(kind)).name,
                provenance=prov,
                tenant=tenant or "",
            )
        )
    return out


# --- PostgreSQL ---------------------------------------------------------------------------------


_PG_READY: set[str] = set()  # databases (URLs) that have the table: DDL once per process


class PgAnnotations:
    def __init__(self, index: Any) -> None:
        self.index = index
        self.pool = index.pool
        if self.pool.url in _PG_READY:
            return
        with self.pool.connection() as conn:
            conn.execute(
                f"""CREATE TABLE IF NOT EXISTS {PG_TABLE} (
                    id BIGSERIAL PRIMARY KEY,
                    index_name TEXT NOT NULL,
                    space TEXT NOT NULL,
                    window_id BIGINT NOT NULL,
                    tenant TEXT NOT NULL,
                    label TEXT NOT NULL,
                    label_type SMALLINT NOT NULL,
                    provenance TEXT NOT NULL,
                    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                    UNIQUE (index_name, space, window_id, label, provenance))"""
            )
        _PG_READY.add(self.pool.url)

    def _space(self, key: SpaceKey) -> tuple[str, str]:
        """The space's table, and the tag its labels carry: the slug and the space's
        creation time, so a space dropped and made again (its window ids start over) does
        not inherit the old labels."""
        self.index.space(key)  # IndexNotFoundError when absent
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT table_name, created_at FROM sevensense_index_spaces "
                "WHERE index_name = %s AND space = %s",
                (self.index.name, key.slug),
            ).fetchone()
        return str(row[0]), f"{key.slug}@{row[1].isoformat()}"

    def _table(self, key: SpaceKey) -> str:
        return self._space(key)[0]

    def windows(
        self, key: SpaceKey, scope: Scope, ids: list[int] | None = None
    ) -> list[IndexedWindow]:
        from psycopg import sql

        table = sql.Identifier(self._table(key))
        query = sql.SQL(
            "SELECT id, recording_id, source, tenant, start_s, end_s FROM {} WHERE true"
        ).format(table)
        params: list[Any] = []
        if scope.tenant is not None:
            query += sql.SQL(" AND tenant = %s")
            params.append(scope.tenant)
        if ids is not None:
            query += sql.SQL(" AND id = ANY(%s)")
            params.append(list(ids))
        with self.pool.connection() as conn:
            rows = conn.execute(query + sql.SQL(" ORDER BY id"), params).fetchall()
        return [IndexedWindow(int(r[0]), r[1], r[2], r[3], float(r[4]), float(r[5])) for r in rows]

    def vectors(self, key: SpaceKey, ids: np.ndarray) -> np.ndarray:
        from psycopg import sql

        table = sql.Identifier(self._table(key))
        wanted = [int(i) for i in ids]
        with self.pool.connection() as conn:
            rows = conn.execute(
                sql.SQL("SELECT id, embedding FROM {} WHERE id = ANY(%s)").format(table), (wanted,)
            ).fetchall()
        found = {int(r[0]): r[1] for r in rows}
        dim = self.index.space(key).dim
        out = np.zeros((len(wanted), dim), dtype=np.float32)
        for i, wid in enumerate(wanted):
            v = found[wid]
            out[i] = np.asarray(v.to_numpy() if hasattr(v, "to_numpy") else v, dtype=np.float32)
        return out

    def annotate(self, key: SpaceKey, items: list[AnnotationIn], scope: Scope) -> AnnotateResult:
        plan = _plan(items, self.windows(key, scope))
        tag = self._space(key)[1]
        added = updated = unchanged = 0
        with self.pool.connection() as conn:
            for w, item in plan:
                kind = int(LabelType[item.type])
                row = conn.execute(
                    f"INSERT INTO {PG_TABLE} (index_name, space, window_id, tenant, label, "
                    "label_type, provenance) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (index_name, space, window_id, label, provenance) DO UPDATE "
                    f"SET label_type = EXCLUDED.label_type "
                    f"WHERE {PG_TABLE}.label_type <> EXCLUDED.label_type "
                    "RETURNING (xmax = 0)",
                    (
                        self.index.name,
                        tag,
                        w.window_id,
                        w.tenant,
                        item.label,
                        kind,
                        item.provenance,
                    ),
                ).fetchone()
                if row is None:
                    unchanged += 1
                elif row[0]:
                    added += 1
                else:
                    updated += 1
        ids = {w.window_id for w, _ in plan}
        stored = [a for a in self.annotations(key, scope) if a.window_id in ids]
        return AnnotateResult(added=added, updated=updated, unchanged=unchanged, annotations=stored)

    def annotations(
        self, key: SpaceKey, scope: Scope, label: str | None = None
    ) -> list[Annotation]:
        from psycopg import sql

        name, tag = self._space(key)
        table = sql.Identifier(name)
        query = sql.SQL(
            "SELECT a.id, a.window_id, w.recording_id, w.start_s, w.end_s, a.label, a.label_type, "
            "a.provenance, a.tenant FROM {} a JOIN {} w ON w.id = a.window_id "
            "WHERE a.index_name = %s AND a.space = %s"
        ).format(sql.Identifier(PG_TABLE), table)
        params: list[Any] = [self.index.name, tag]
        if scope.tenant is not None:
            query += sql.SQL(" AND a.tenant = %s")
            params.append(scope.tenant)
        if label is not None:
            query += sql.SQL(" AND a.label = %s")
            params.append(label)
        with self.pool.connection() as conn:
            rows = conn.execute(query + sql.SQL(" ORDER BY a.id"), params).fetchall()
        return [
            Annotation(
                id=int(r[0]),
                window_id=int(r[1]),
                recording_id=r[2],
                start_s=float(r[3]),
                end_s=float(r[4]),
                label=r[5],
                type=LabelType(int(r[6])).name,
                provenance=r[7],
                tenant=r[8],
            )
            for r in rows
        ]

    def delete(
        self, key: SpaceKey, scope: Scope, ids: list[int] | None = None, label: str | None = None
    ) -> int:
        doomed = [
            a.id for a in self.annotations(key, scope, label) if ids is None or a.id in set(ids)
        ]
        if not doomed:
            return 0
        with self.pool.connection() as conn:
            conn.execute(f"DELETE FROM {PG_TABLE} WHERE id = ANY(%s)", (doomed,))
        return len(doomed)
