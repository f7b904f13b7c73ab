"""pgvector as a production store, on the tests' real PostgreSQL: float16 rows kept in line,
and a password rotated on the server while searches run (the secret re-read, the pool's
sessions re-made)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import psycopg
import pytest

from sevensense.errors import SevensenseError
from sevensense.index.pgvector import PgVectorIndex
from sevensense.index.records import EntryBatch, EntryMeta, Scope, SpaceInfo, SpaceKey
from sevensense.index.store import open_index
from sevensense.settings import IndexSettings
from tests.conftest import aws_client, make_settings

KEY = SpaceKey(model_name="prod", model_version="1")


def _batch(n: int, dim: int, seed: int = 0) -> EntryBatch:
    vecs = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    metas = [
        EntryMeta(recording_id=f"r{i // 50}", start_s=i % 50, end_s=i % 50 + 1, tenant="t")
        for i in range(n)
    ]
    return EntryBatch(vecs, metas)


@pytest.mark.parametrize("halfvec", [True, False])
def test_rows_stay_in_line(pg_url: str, halfvec: bool) -> None:
    index = PgVectorIndex(pg_url, f"inline-{halfvec}".lower(), IndexSettings(pg_halfvec=halfvec))
    batch = _batch(300, 1024)
    info = SpaceInfo(key=KEY, dim=1024)
    assert index.add(info, batch) == 300
    got = index.search(KEY, batch.vectors[7], 1, Scope.everyone())[0][0]
    assert (got.recording_id, got.start_s) == ("r0", 7.0) and got.score > 0.999
    table = index._lookup(KEY)[1]
    with psycopg.connect(pg_url) as conn:
        kind, storage = conn.execute(
            "SELECT format_type(atttypid, NULL), attstorage FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attname = 'embedding'",
            (table,),
        ).fetchone() or (None, None)
        toast = conn.execute(
            "SELECT coalesce(pg_relation_size(nullif(reltoastrelid, 0)), 0), "
            "pg_relation_size(oid) FROM pg_class WHERE relname = %s",
            (table,),
        ).fetchone()
    if halfvec:  # float16, in the row: about 2 KB a row, nothing out of line
        assert kind == "halfvec" and storage == "p"
        assert toast is not None and toast[0] == 0
        assert 2048 < toast[1] / 300 < 2900
    else:  # float32 stays out of line (4 KB in the row would take a page per row)
        assert kind == "vector" and storage != "p"
        assert toast is not None and toast[0] > 300 * 4096
    index.close()


@pytest.fixture
def rotating_role(pg_url: str) -> Iterator[tuple[str, str]]:
    """A login role that must give its password (scram) on the server's socket, owning a
    database of its own with pgvector: (socket directory, role)."""
    role, db = "rotator", "rotation"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        hba = Path(str(conn.execute("SHOW hba_file").fetchone()[0]))  # type: ignore[index]
        original = hba.read_text()
        hba.write_text(f"local all {role} scram-sha-256\n" + original)
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'first-password'")
        conn.execute(f"CREATE DATABASE {db} OWNER {role}")
        conn.execute("SELECT pg_reload_conf()")
    base = pg_url.replace("/postgres?", f"/{db}?") if "/postgres?" in pg_url else pg_url
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    try:
        yield parse_qs(urlparse(pg_url).query)["host"][0], role
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            hba.write_text(original)
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def test_password_rotation_while_searching(
    pg_url: str,
    rotating_role: tuple[str, str],
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    socket_dir, role = rotating_role
    for name, value in {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
    secret = {"username": role, "host": socket_dir, "port": 5432, "dbname": "rotation"}
    sm = aws_client("secretsmanager", moto_endpoint)
    arn = sm.create_secret(
        Name="index-db-rotation", SecretString=json.dumps({**secret, "password": "first-password"})
    )["ARN"]
    settings = make_settings(index__backend="pgvector", index__pg_secret=arn, index__pg_pool_size=4)
    index = open_index(settings, "rotation")
    assert isinstance(index, PgVectorIndex)
    batch = _batch(200, 64)
    index.add(SpaceInfo(key=KEY, dim=64), batch)

    done = threading.Event()
    searches, failures = [0], []

    def search() -> None:
        i = 0
        while not done.is_set():
            try:
                hits = index.search(KEY, batch.vectors[i % 200], 1, Scope.everyone())[0]
                assert hits[0].start_s == (i % 200) % 50
                searches[0] += 1
            except (SevensenseError, AssertionError) as exc:
                failures.append(exc)
            i += 1

    threads = [threading.Thread(target=search) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    before = searches[0]
    # Secrets Manager's rotation order: the database first, then the secret's current
    # version; the sessions made with the old password are ended
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f"ALTER ROLE {role} PASSWORD 'second-password'")
        sm.put_secret_value(
            SecretId=arn, SecretString=json.dumps({**secret, "password": "second-password"})
        )
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
        )
    time.sleep(1.5)
    done.set()
    for t in threads:
        t.join(timeout=30)
    assert not failures, failures[:3]
    assert searches[0] > before + 10  # searches went on after the rotation
    assert index.pool.secret_reads >= 2 and "second-password" in index.pool.url
    index.close()


def _db_url(pg_url: str, db: str, user: str | None = None) -> str:
    url = pg_url.replace("/postgres?", f"/{db}?")
    return url.replace("postgres:@", f"{user}:@", 1) if user else url


def test_migration_makes_a_least_privilege_role(pg_url: str) -> None:
    """The tasks' role owns the index schema and nothing else; a space made before the
    migration (by the master user, in public) is handed over and still searched."""
    from sevensense.index.pg_roles import APP_SCHEMA, migrate

    db, role = "migration", "sevensense_app_test"
    assert "postgres:@" in pg_url and "/postgres?" in pg_url  # the fixture's URL shape
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {db}")
    admin = _db_url(pg_url, db)
    try:
        legacy = PgVectorIndex(admin, "legacy", IndexSettings())
        batch = _batch(40, 16)
        legacy.add(SpaceInfo(key=KEY, dim=16), batch)
        legacy.close()

        done = migrate(admin, role, "app-password")
        assert done[0] == f"role {role} created" and "tables moved" in done[-1]
        assert migrate(admin, role, "new-password")[0] == f"role {role} updated"

        app = PgVectorIndex(_db_url(pg_url, db, role), "legacy", IndexSettings())
        hit = app.search(KEY, batch.vectors[3], 1, Scope.everyone())[0][0]
        assert (hit.recording_id, hit.start_s) == ("r0", 3.0)
        other = SpaceKey(model_name="prod", model_version="2")
        assert app.add(SpaceInfo(key=other, dim=16), batch) == 40  # DDL in its own schema
        app.drop_space(other)
        app.close()

        with psycopg.connect(_db_url(pg_url, db, role), autocommit=True) as conn:
            su, createrole, createdb = conn.execute(
                "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
                "WHERE rolname = current_user"
            ).fetchone() or (True, True, True)
            assert not (su or createrole or createdb)
            schemas = {
                r[0]
                for r in conn.execute(
                    "SELECT nspname FROM pg_namespace WHERE nspowner = "
                    "(SELECT oid FROM pg_roles WHERE rolname = current_user)"
                )
            }
            assert schemas == {APP_SCHEMA}
            for denied in (
                "CREATE TABLE public.intruder (i int)",
                "CREATE ROLE intruder",
                "SELECT rolpassword FROM pg_authid",
                "CREATE DATABASE intruder",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(denied)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            conn.execute(f"DROP ROLE IF EXISTS {role}")
