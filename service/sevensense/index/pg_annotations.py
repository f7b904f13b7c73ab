"""Labels on the pgvector backend: one table, ``sevensense_annotations``, keyed by index,
space (tagged with its creation time) and window id, with the window's tenant."""

from __future__ import annotations

from typing import Any

import numpy as np

from sevensense.index.annotations import (
    AnnotateResult,
    Annotation,
    AnnotationIn,
    IndexedWindow,
    LabelType,
    plan_items,
)
from sevensense.index.records import Scope, SpaceKey

PG_TABLE = "sevensense_annotations"

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
        plan = plan_items(items, self.windows(key, scope))
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
