"""The pgvector database's migration: run once with the master user (``sevensense index
migrate``), so that the entry and worker tasks connect as a role that holds only what the
index needs.

The role logs in, owns one schema (``sevensense``: the registry and one table per space,
which it creates and drops as spaces come and go) and nothing else: no superuser, no
``rds_superuser``, no role or database creation, no CREATE on ``public``. The master user
creates the ``vector`` extension, which needs more. Running it again sets the role's
password (the app secret rotated) and changes nothing else.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from sevensense.errors import VectorIndexError
from sevensense.index.pg_pool import LOCK_KEY
from sevensense.index.pgvector import REGISTRY

APP_SCHEMA = "sevensense"


def migrate(admin_url: str, role: str, password: str) -> list[str]:
    """Creates or updates the app role; returns what it did, for the operator."""
    done: list[str] = []
    ident = sql.Identifier(role)
    schema = sql.Identifier(APP_SCHEMA)
    try:
        with psycopg.connect(admin_url, connect_timeout=10) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            dbname = conn.execute("SELECT current_database()").fetchone()
            assert dbname is not None
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(
                sql.SQL(
                    verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT "
                    "NOREPLICATION NOBYPASSRLS PASSWORD {}"
                ).format(ident, sql.Literal(password))
            )
            done.append(f"role {role} {'updated' if exists else 'created'}")
            conn.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    sql.Identifier(str(dbname[0])), ident
                )
            )
            conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(ident))  # to hand over
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(schema, ident)
            )
            conn.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM {}").format(ident))
            conn.execute(
                sql.SQL("ALTER ROLE {} SET search_path = {}, public").format(ident, schema)
            )
            # spaces made before the migration (by the master user, in public) move over
            moved = _adopt(conn, ident, schema)
            if moved:
                done.append(f"{moved} tables moved to schema {APP_SCHEMA}")
    except psycopg.Error as exc:
        raise VectorIndexError(f"pgvector migration failed: {exc}") from exc
    return done


def _adopt(
    conn: psycopg.Connection[tuple[object, ...]], ident: sql.Identifier, schema: sql.Identifier
) -> int:
    found = conn.execute("SELECT to_regclass(%s)", (f"public.{REGISTRY}",)).fetchone()
    if not found or found[0] is None:
        return 0
    tables = [REGISTRY] + [
        str(r[0]) for r in conn.execute(f"SELECT table_name FROM public.{REGISTRY}").fetchall()
    ]
    for table in tables:
        name = sql.Identifier("public", table)
        conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(name, ident))
        conn.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(name, schema))
    return len(tables)
