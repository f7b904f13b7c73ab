"""The shared backend: PostgreSQL (Aurora in AWS) with pgvector, for deployments where many
hosts write and search one index.

One table per (index name, space), listed in ``sevensense_index_spaces``; HNSW over cosine
distance; tenant, recording, site and time are columns, so tenancy and filters are SQL
conditions inside the search. With pgvector ≥ 0.8 a filtered HNSW scan continues until it
has ``k`` rows (``hnsw.iterative_scan``); a scope or filter that leaves few rows is searched
exactly, as the embedded backend does, so both return the same neighbours.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from sevensense.errors import (
    DimensionMismatchError,
    IndexEmptyError,
    IndexNotFoundError,
    VectorIndexError,
)
from sevensense.index.pg_pool import LOCK_KEY as _LOCK_KEY
from sevensense.index.pg_pool import Pool
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
from sevensense.settings import IndexSettings

REGISTRY = "sevensense_index_spaces"
BULK_ROWS = 5_000
HALFVEC_MAX_DIM = 4_000  # pgvector's HNSW limit for halfvec
SEARCH_RETRIES = 2
IN_LINE_MAX_DIM = 2_000  # halfvec rows up to ~4 KB: at least two per 8-KB page


class PgVectorIndex:
    backend = "pgvector"

    def __init__(self, url: str | Callable[[], str], name: str, settings: IndexSettings) -> None:
        """``url``: a URL, or a function that reads it (the secret), called again after an
        authentication failure (a rotated password)."""
        self.name = check_index_name(name)
        self.settings = settings
        self.pool = Pool(url, settings.pg_pool_size)
        self._spaces: dict[str, tuple[SpaceInfo, str]] = {}
        self._types: dict[str, str] = {}
        with self.pool.connection() as conn:
            conn.execute(
                f"""CREATE TABLE IF NOT EXISTS {REGISTRY} (
                    index_name TEXT NOT NULL,
                    space TEXT NOT NULL,
                    info JSONB NOT NULL,
                    table_name TEXT NOT NULL UNIQUE,
                    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                    PRIMARY KEY (index_name, space))"""
            )

    # --- spaces -----------------------------------------------------------------------------

    def _lookup(self, key: SpaceKey) -> tuple[SpaceInfo, str]:
        found = self._spaces.get(key.slug)
        if found is not None:
            return found
        with self.pool.connection() as conn:
            row = conn.execute(
                f"SELECT info, table_name FROM {REGISTRY} WHERE index_name = %s AND space = %s",
                (self.name, key.slug),
            ).fetchone()
            if row is None:
                named = conn.execute(
                    f"SELECT 1 FROM {REGISTRY} WHERE index_name = %s LIMIT 1", (self.name,)
                ).fetchone()
        if row is None:
            if named is None:
                raise IndexNotFoundError(f"no index named {self.name!r}", index=self.name)
            raise IndexNotFoundError(
                f"index {self.name!r} has no space for {key}", index=self.name, space=key.slug
            )
        found = (SpaceInfo.model_validate(row[0]), str(row[1]))
        self._spaces[key.slug] = found
        return found

    def ensure_space(self, info: SpaceInfo) -> SpaceInfo:
        try:
            existing = self._lookup(info.key)[0]
        except IndexNotFoundError:
            self._create(info)
            existing = self._lookup(info.key)[0]
        if existing.dim != info.dim:
            raise DimensionMismatchError(
                f"the space {info.key} holds vectors of width {existing.dim}, not {info.dim}",
                expected=existing.dim,
                got=info.dim,
            )
        return existing

    def _create(self, info: SpaceInfo) -> None:
        table = f"sv_{info.key.table_suffix(self.name)}"
        storage = (
            "halfvec" if self.settings.pg_halfvec and info.dim <= HALFVEC_MAX_DIM else "vector"
        )
        ident = sql.Identifier(table)
        with self.pool.connection() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            if conn.execute(
                f"SELECT 1 FROM {REGISTRY} WHERE index_name = %s AND space = %s",
                (self.name, info.key.slug),
            ).fetchone():
                return
            conn.execute(
                sql.SQL(
                    """CREATE TABLE {} (
                    id BIGSERIAL PRIMARY KEY,
                    tenant TEXT NOT NULL,
                    recording_id TEXT NOT NULL,
                    source TEXT NOT NULL DEFAULT '',
                    start_ms BIGINT NOT NULL,
                    start_s DOUBLE PRECISION NOT NULL,
                    end_s DOUBLE PRECISION NOT NULL,
                    site TEXT,
                    rec_time TIMESTAMPTZ,
                    model_version TEXT NOT NULL,
                    embedding {}({}) NOT NULL,
                    UNIQUE (tenant, recording_id, start_ms))"""
                ).format(ident, sql.SQL(storage), sql.Literal(info.dim))
            )
            if storage == "halfvec" and info.dim <= IN_LINE_MAX_DIM:
                # PLAIN keeps the vector in the row: a 1024-d halfvec is 2 KB, just over
                # the TOAST threshold, and three rows fit a page (a 4-KB float32 vector
                # would take a page to itself, so it stays out of line)
                conn.execute(
                    sql.SQL("ALTER TABLE {} ALTER COLUMN embedding SET STORAGE PLAIN").format(ident)
                )
            self._hnsw(conn.cursor(), table, storage)
            conn.execute(
                sql.SQL("CREATE INDEX {} ON {} (tenant, recording_id text_pattern_ops)").format(
                    sql.Identifier(f"{table}_tenant"), ident
                )
            )
            conn.execute(
                sql.SQL("CREATE INDEX {} ON {} (recording_id text_pattern_ops)").format(
                    sql.Identifier(f"{table}_recording"), ident
                )
            )
            conn.execute(
                f"INSERT INTO {REGISTRY} (index_name, space, info, table_name) "
                "VALUES (%s, %s, %s, %s)",
                (self.name, info.key.slug, json.dumps(info.model_dump(mode="json")), table),
            )

    def space(self, key: SpaceKey) -> SpaceInfo:
        return self._lookup(key)[0]

    def spaces(self) -> list[SpaceInfo]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT info FROM {REGISTRY} WHERE index_name = %s ORDER BY space", (self.name,)
            ).fetchall()
        return [SpaceInfo.model_validate(r[0]) for r in rows]

    def _tables(self) -> list[tuple[SpaceInfo, str]]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT info, table_name FROM {REGISTRY} WHERE index_name = %s ORDER BY space",
                (self.name,),
            ).fetchall()
        return [(SpaceInfo.model_validate(r[0]), str(r[1])) for r in rows]

    def recordings(self, key: SpaceKey) -> list[RecordingRef]:
        table = sql.Identifier(self._lookup(key)[1])
        with self.pool.connection() as conn:
            rows = conn.execute(
                sql.SQL(
                    "SELECT recording_id, min(source), tenant, min(site), min(rec_time), count(*) "
                    "FROM {} GROUP BY tenant, recording_id ORDER BY min(id)"
                ).format(table)
            ).fetchall()
        return [
            RecordingRef(
                recording_id=r[0], source=r[1], tenant=r[2], site=r[3], time=r[4], windows=r[5]
            )
            for r in rows
        ]

    def drop_space(self, key: SpaceKey) -> None:
        self._spaces.pop(key.slug, None)
        with self.pool.connection() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            row = conn.execute(
                f"DELETE FROM {REGISTRY} WHERE index_name = %s AND space = %s RETURNING table_name",
                (self.name, key.slug),
            ).fetchone()
            if row is not None:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(row[0])))

    # --- writing ----------------------------------------------------------------------------

    def add(self, info: SpaceInfo, batch: EntryBatch) -> int:
        space = self.ensure_space(info)
        check_dim(batch.vectors, space)
        if not len(batch):
            return 0
        table = sql.Identifier(self._lookup(space.key)[1])
        rows = [
            (
                m.tenant,
                m.recording_id,
                m.source,
                m.start_ms,
                m.start_s,
                m.end_s,
                m.site,
                m.time,
                space.key.model_version,
                batch.vectors[i],
            )
            for i, m in enumerate(batch.meta)
        ]
        added = 0
        name = self._lookup(space.key)[1]
        with self.pool.connection() as conn, conn.cursor() as cur:
            statement = sql.SQL(
                "INSERT INTO {} (tenant, recording_id, source, start_ms, start_s, end_s, site, "
                "rec_time, model_version, embedding) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (tenant, recording_id, start_ms) DO NOTHING"
            ).format(table)
            # A bulk load into an empty space builds the graph once, afterwards: inserting
            # row by row into a live HNSW graph is an order of magnitude slower.
            bulk = len(rows) >= BULK_ROWS and cur.execute(
                sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(table)
            ).fetchone() == (True,)
            if bulk:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                cur.execute(
                    sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(f"{name}_hnsw"))
                )
            for start in range(0, len(rows), 500):
                cur.executemany(statement, rows[start : start + 500])
                added += max(cur.rowcount, 0)
            if bulk:
                cur.execute(
                    sql.SQL("SET LOCAL maintenance_work_mem = {}").format(
                        sql.Literal(f"{self.settings.pg_build_mb}MB")
                    )
                )
                self._hnsw(cur, name, self._storage(conn, name))
        return added

    def compact(self) -> dict[str, float]:
        """PostgreSQL keeps its HNSW graph current on insert and vacuums it itself."""
        return {}

    def _storage(self, conn: psycopg.Connection[Any], table: str) -> str:
        """``halfvec`` or ``vector``: spaces made before halfvec keep their type."""
        found = self._types.get(table)
        if found is None:
            row = conn.execute(
                "SELECT format_type(atttypid, NULL) FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attname = 'embedding'",
                (table,),
            ).fetchone()
            found = self._types[table] = str(row[0]) if row else "vector"
        return found

    def _hnsw(self, cur: psycopg.Cursor[Any], table: str, storage: str) -> None:
        cur.execute(
            sql.SQL(
                "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding {}) "
                "WITH (m = {}, ef_construction = {})"
            ).format(
                sql.Identifier(f"{table}_hnsw"),
                sql.Identifier(table),
                sql.SQL(f"{storage}_cosine_ops"),
                sql.Literal(self.settings.hnsw_m),
                sql.Literal(self.settings.ef_construction),
            )
        )

    def delete_recording(self, recording_id: str, scope: Scope) -> int:
        removed = 0
        for _info, table in self._tables():
            with self.pool.connection() as conn:
                query = sql.SQL("DELETE FROM {} WHERE recording_id = %s").format(
                    sql.Identifier(table)
                )
                params: list[Any] = [recording_id]
                if scope.tenant is not None:
                    query += sql.SQL(" AND tenant = %s")
                    params.append(scope.tenant)
                removed += conn.execute(query, params).rowcount
        return removed

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
        """A read, so a session the server ended under it (failover, a rotation) is
        retried once on a new connection rather than answered with 503."""
        for attempt in range(SEARCH_RETRIES + 1):
            try:
                return self._search(key, queries, k, scope, flt, metric)
            except VectorIndexError as exc:
                lost = isinstance(exc.__cause__, psycopg.OperationalError)
                if not lost or attempt == SEARCH_RETRIES:
                    raise
                self.pool.close()  # its other idle sessions went the same way
        raise AssertionError("unreachable")

    def _search(
        self,
        key: SpaceKey,
        queries: np.ndarray,
        k: int,
        scope: Scope,
        flt: SearchFilter | None,
        metric: Metric,
    ) -> list[list[Neighbour]]:
        info, table_name = self._lookup(key)
        qs = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        check_dim(qs, info)
        flt = flt or SearchFilter()
        table = sql.Identifier(table_name)
        where, params = _where(scope, flt)
        scoped, scoped_params = _where(scope, SearchFilter())
        want = candidates(k, metric)
        out: list[list[Neighbour]] = []
        with self.pool.connection() as conn:
            limit = self.settings.exact_below + 1
            upto = sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} {} LIMIT %s) s")
            visible = _scalar(
                conn.execute(upto.format(table, scoped), [*scoped_params, 1]).fetchone()
            )
            if visible == 0:
                raise IndexEmptyError(
                    f"the space {key} of index {self.name!r} holds nothing this key may search",
                    index=self.name,
                    space=key.slug,
                )
            # bounded counts: only whether the scope is small enough to search exactly
            n_allowed = _scalar(
                conn.execute(upto.format(table, where), [*params, limit]).fetchone()
            )
            if n_allowed == 0:
                return [[] for _ in qs]
            exact = n_allowed <= self.settings.exact_below
            ef = sql.Literal(max(self.settings.ef_search, want))
            conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(ef))
            if exact:
                conn.execute("SET LOCAL enable_indexscan = off")
            else:
                conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            cast = sql.SQL(self._storage(conn, table_name))
            query = sql.SQL(
                "SELECT * FROM (SELECT recording_id, source, start_s, end_s, tenant, site, "
                "rec_time, model_version, embedding, embedding <=> %s::{} AS d FROM {} {} "
                "ORDER BY embedding <=> %s::{} LIMIT %s) c ORDER BY d, start_s"
            ).format(cast, table, where, cast)
            for q in qs:
                rows = conn.execute(query, [q, *params, q, want]).fetchall()
                out.append(_neighbours(rows, q, k, metric, info))
        return out

    def stats(self) -> list[SpaceStats]:
        out = []
        for info, table in self._tables():
            with self.pool.connection() as conn:
                row = conn.execute(
                    sql.SQL(
                        "SELECT count(*), count(DISTINCT (tenant, recording_id)), "
                        "count(DISTINCT tenant), pg_total_relation_size(%s) FROM {}"
                    ).format(sql.Identifier(table)),
                    (table,),
                ).fetchone()
            assert row is not None
            out.append(
                SpaceStats(
                    index=self.name,
                    backend=self.backend,
                    space=info,
                    entries=row[0],
                    recordings=row[1],
                    tenants=row[2],
                    size_bytes=row[3],
                )
            )
        return out

    def close(self) -> None:
        self.pool.close()


def _where(scope: Scope, flt: SearchFilter) -> tuple[sql.Composable, list[Any]]:
    conditions: list[sql.Composable] = []
    params: list[Any] = []
    if scope.tenant is not None:
        conditions.append(sql.SQL("tenant = %s"))
        params.append(scope.tenant)
    if flt.recording_prefix:
        conditions.append(sql.SQL("recording_id LIKE %s ESCAPE '\\'"))
        params.append(escape_like(flt.recording_prefix))
    if flt.site is not None:
        conditions.append(sql.SQL("site = %s"))
        params.append(flt.site)
    if flt.time_from is not None:
        conditions.append(sql.SQL("rec_time >= %s"))
        params.append(_utc(flt.time_from))
    if flt.time_to is not None:
        conditions.append(sql.SQL("rec_time <= %s"))
        params.append(_utc(flt.time_to))
    if not conditions:
        return sql.SQL(""), params
    return sql.SQL("WHERE ") + sql.SQL(" AND ").join(conditions), params


def _array(value: Any) -> np.ndarray:
    """pgvector's adapter gives ``Vector`` objects (or arrays, by version)."""
    raw = value.to_numpy() if hasattr(value, "to_numpy") else value
    return np.asarray(raw, dtype=np.float32)


def _scalar(row: Any) -> int:
    return int(row[0]) if row else 0


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _neighbours(
    rows: list[Any], q: np.ndarray, k: int, metric: Metric, info: SpaceInfo
) -> list[Neighbour]:
    if not rows:
        return []
    if metric == "poincare":
        vecs = np.stack([_array(r[8]) for r in rows])
        pos, score, dist = rank(q, vecs, k, "poincare", info.curvature)
        picked = [(rows[p], float(s), float(d)) for p, s, d in zip(pos, score, dist, strict=True)]
    else:
        picked = [(r, 1.0 - float(r[9]), float(r[9])) for r in rows[:k]]
    return [
        Neighbour(
            recording_id=r[0],
            source=r[1],
            start_s=r[2],
            end_s=r[3],
            score=s,
            distance=d,
            model_name=info.key.model_name,
            model_version=r[7],
            tenant=r[4],
            site=r[5],
            time=r[6],
        )
        for r, s, d in picked
    ]
