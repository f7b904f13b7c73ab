"""Opening a named index on the configured backend: the only place that knows both."""

from __future__ import annotations

import json
from typing import Any

from sevensense.errors import ConfigError, VectorIndexError
from sevensense.index.base import VectorIndex
from sevensense.index.records import check_index_name
from sevensense.settings import Settings


def pg_url(settings: Settings) -> str:
    """``index.pg_url``, else a URL built from the Secrets Manager secret the Terraform
    creates for Aurora (``{username, password, host, port, dbname}``)."""
    if settings.index.pg_url:
        return settings.index.pg_url
    if not settings.index.pg_secret:
        raise ConfigError(
            "the pgvector backend needs index.pg_url (SEVENSENSE_INDEX__PG_URL) or "
            "index.pg_secret (SEVENSENSE_INDEX_DB_SECRET_ARN)"
        )
    from psycopg.conninfo import make_conninfo

    from sevensense.aws import client

    try:
        answer: dict[str, Any] = client("secretsmanager", VectorIndexError).get_secret_value(
            SecretId=settings.index.pg_secret
        )
        secret = json.loads(answer["SecretString"])
        return make_conninfo(
            host=str(secret["host"]),
            port=str(secret.get("port", 5432)),
            user=str(secret["username"]),
            password=str(secret["password"]),
            dbname=str(secret.get("dbname") or secret.get("dbName") or "postgres"),
            # TLS to a database host; a unix socket (a local server) has none to offer
            sslmode="disable" if str(secret["host"]).startswith("/") else "require",
        )
    except VectorIndexError:
        raise
    except Exception as exc:  # boto errors, a secret that is not the expected JSON
        raise VectorIndexError(
            f"cannot read the index database secret {settings.index.pg_secret!r}: {exc}"
        ) from exc


def open_index(settings: Settings, name: str | None = None) -> VectorIndex:
    """The index ``name`` (default ``index.name``) on the configured backend; opening never
    creates anything on disk (the first add does)."""
    chosen = check_index_name(name or settings.index.name)
    if settings.index.backend == "pgvector":
        from sevensense.index.pgvector import PgVectorIndex

        # a secret is read again after a refused login (rotation); a fixed URL is not
        url = settings.index.pg_url or (lambda: pg_url(settings))
        return PgVectorIndex(url, chosen, settings.index)
    from sevensense.index.hoplite import HopliteIndex

    return HopliteIndex(settings.index_dir(), chosen, settings.index)


def index_names(settings: Settings) -> list[str]:
    """The named indexes the configured backend holds."""
    if settings.index.backend == "pgvector":
        import psycopg

        from sevensense.index.pgvector import REGISTRY

        try:
            with psycopg.connect(pg_url(settings), connect_timeout=10) as conn:
                exists = conn.execute("SELECT to_regclass(%s)", (REGISTRY,)).fetchone()
                if not exists or exists[0] is None:
                    return []
                rows = conn.execute(
                    f"SELECT DISTINCT index_name FROM {REGISTRY} ORDER BY 1"
                ).fetchall()
        except psycopg.Error as exc:
            raise VectorIndexError(f"cannot list pgvector indexes: {exc}") from exc
        return [str(r[0]) for r in rows]
    root = settings.index_dir()
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
