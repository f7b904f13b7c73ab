"""Labels on the hoplite backend: rows of perch-hoplite 1.0.2's own ``annotations`` table
(the window's recording row and ``offsets``, ``label``, ``label_type`` as its ``LabelType``,
``provenance``), so hoplite's own readers and its agile ``DataManager`` see them; tenancy
is the recording row's tenant."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sevensense.errors import WindowNotFoundError
from sevensense.index.annotations import (
    AnnotateResult,
    Annotation,
    AnnotationIn,
    IndexedWindow,
    LabelType,
    plan_items,
)
from sevensense.index.records import Scope, SpaceKey


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
            plan = plan_items(items, windows)
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
