"""The pgvector backend's connections: a few long-lived ones (connecting costs more than a
search), checked before use, and re-made with a freshly read secret after the database
refuses the password (a rotation).

A rotation changes the password on the database before the secret's current version
(Secrets Manager's setSecret, then finishSecret), and terminates or outlives the sessions
made with the old one: a connection that died is replaced on checkout, and a refused login
re-reads the secret and retries a few times for the secret to catch up.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from pgvector.psycopg import register_vector

from sevensense.errors import VectorIndexError

LOCK_KEY = 0x7E55E  # pg_advisory_xact_lock: one DDL writer at a time
AUTH_RETRIES = 5
AUTH_RETRY_S = 0.5
_AUTH_STATES = {"28P01", "28000"}  # invalid_password, invalid_authorization_specification


def auth_failed(exc: psycopg.Error) -> bool:
    return exc.sqlstate in _AUTH_STATES or "authentication failed" in str(exc)


class Pool:
    def __init__(self, url: str | Callable[[], str], size: int) -> None:
        self._source: Callable[[], str] = url if callable(url) else (lambda: url)
        self.url = self._source()
        self._idle: queue.LifoQueue[psycopg.Connection[Any]] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)
        self._ready = False
        self._ready_lock = threading.Lock()
        self._url_lock = threading.Lock()
        self.secret_reads = 1

    def _reread(self, refused: str) -> None:
        """A new URL from the source (once per refusal, however many threads saw it), and
        the idle sessions of the old credentials closed."""
        with self._url_lock:
            if self.url == refused:
                self.url = self._source()
                self.secret_reads += 1
        self.close()

    def _connect(self) -> psycopg.Connection[Any]:
        for attempt in range(AUTH_RETRIES + 1):
            url = self.url
            try:
                conn = psycopg.connect(url, autocommit=False, connect_timeout=10)
                break
            except psycopg.Error as exc:
                if not auth_failed(exc) or attempt == AUTH_RETRIES:
                    raise VectorIndexError(
                        f"cannot connect to the pgvector database: {exc}"
                    ) from exc
                if attempt:
                    time.sleep(AUTH_RETRY_S)
                self._reread(url)
        try:
            with self._ready_lock:
                if not self._ready:
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
                    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                    conn.commit()
                    self._ready = True
            register_vector(conn)
        except psycopg.Error as exc:
            with suppress(psycopg.Error):
                conn.close()
            raise VectorIndexError(f"pgvector: {exc}") from exc
        return conn

    def _checkout(self) -> psycopg.Connection[Any]:
        """An idle connection that still answers, else a new one."""
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return self._connect()
            try:
                conn.execute("SELECT 1")
                conn.rollback()
                return conn
            except psycopg.Error:
                with suppress(psycopg.Error):
                    conn.close()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection for one transaction, committed at the end; a database error comes
        out as ``VectorIndexError`` with the psycopg error as its cause."""
        self._slots.acquire()
        conn: psycopg.Connection[Any] | None = None
        try:
            conn = self._checkout()
            try:
                yield conn
                conn.commit()
            except psycopg.Error as exc:
                with suppress(psycopg.Error):
                    conn.rollback()
                raise VectorIndexError(f"pgvector: {exc}") from exc
            except BaseException:
                with suppress(psycopg.Error):
                    conn.rollback()
                raise
            if not conn.closed:
                self._idle.put(conn)
                conn = None
        finally:
            if conn is not None and not conn.closed:
                conn.close()
            self._slots.release()

    def close(self) -> None:
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return
            with suppress(psycopg.Error):
                conn.close()
