"""The embedded queue: SQS semantics in one SQLite file, for a machine with no AWS account.

Several processes share the file (gateway workers send, a worker process receives). Every
change runs in a ``BEGIN IMMEDIATE`` transaction, which takes SQLite's single write lock up
front, so two receivers can never both see a message as visible and both take it; the loser
retries for up to ``busy_timeout_s`` instead of failing at once. WAL needs shared memory
between the processes: the file must be on a local disk, not a network file system.

Durability: WAL with ``synchronous=FULL``. ``send`` returning means the gateway may answer
"accepted" to a client, so the WAL is fsynced on every commit: NORMAL would survive a crash
of the process but could lose the last commits on power loss. The cost (one fsync per
send/receive/delete) is irrelevant at the rate deferred requests arrive.

Times are wall-clock (``time.time``) because they are compared across processes and
restarts; a clock step shifts visibility deadlines by the same amount.

Receipts: each receive hands out a new receipt, and only the latest one is valid; it stays
valid after the visibility timeout until someone receives the message again. An
operation with an older receipt (the message was delivered again after its visibility
timeout) raises :class:`QueueError` with ``details["stale_receipt"] = True``: the caller
no longer holds the message and must not believe it deleted, extended or released it.
Deleting a message that is already gone is a no-op, as in SQS, because a delete is only
ever "this message is done".

Like SQS's redrive, a message already received ``max_receives`` times moves to the
dead-letter table (reason ``max_receives_exceeded``) when a receive would deliver it again.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sevensense.errors import QueueError
from sevensense.queues.base import Message, QueueDepth

MAX_RECEIVES_EXCEEDED = "max_receives_exceeded"
SENT_TIMESTAMP = "SentTimestamp"
MAX_BODY_BYTES = 256 * 1024
MAX_ATTRIBUTES = 6  # SQS allows 10; a dead letter adds 4 of its own
_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    attributes TEXT NOT NULL,
    sent_at REAL NOT NULL,
    visible_at REAL NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT
);
CREATE INDEX IF NOT EXISTS messages_visible ON messages (queue, visible_at);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    attributes TEXT NOT NULL,
    sent_at REAL NOT NULL,
    receive_count INTEGER NOT NULL,
    code TEXT NOT NULL,
    reason TEXT NOT NULL,
    dead_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_queue ON dead_letters (queue, seq);
"""


@dataclass(frozen=True)
class DeadLetter:
    """A message that failed for good, kept with why until someone redrives or drops it."""

    id: str
    body: str
    receive_count: int
    code: str
    reason: str
    sent_at: float
    dead_at: float
    attributes: dict[str, str] = field(default_factory=dict)


def check_outgoing(body: str, attributes: dict[str, str] | None) -> dict[str, str]:
    """Refuse what SQS would refuse, so code tested on the embedded queue is right on SQS.

    Payloads belong in the object store; the message carries a reference.
    """
    attrs = dict(attributes or {})
    for key, value in attrs.items():
        if not isinstance(key, str) or not isinstance(value, str) or not key or not value:
            raise ValueError(f"message attributes must be non-empty strings, got {key!r}")
    if SENT_TIMESTAMP in attrs:
        raise ValueError(f"message attribute {SENT_TIMESTAMP!r} is reserved (set on receive)")
    if len(attrs) > MAX_ATTRIBUTES:
        raise ValueError(f"at most {MAX_ATTRIBUTES} message attributes, got {len(attrs)}")
    size = len(body.encode()) + sum(len(k.encode()) + len(v.encode()) for k, v in attrs.items())
    if size > MAX_BODY_BYTES:
        raise ValueError(
            f"message of {size} bytes exceeds {MAX_BODY_BYTES}; store the payload and send "
            "its location"
        )
    return attrs


class SqliteQueue:
    """A named queue in a SQLite file; several queues may share one file."""

    def __init__(
        self,
        path: Path,
        name: str = "deferred",
        *,
        max_receives: int = 5,
        visibility_s: int = 300,
        poll_interval_s: float = 0.2,
        busy_timeout_s: float = 30.0,
    ) -> None:
        if max_receives < 1:
            raise ValueError("max_receives must be at least 1")
        self.path = Path(path)
        self.name = name
        self.max_receives = max_receives
        self.visibility_s = visibility_s
        self.poll_interval_s = poll_interval_s
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._connections: list[tuple[int, sqlite3.Connection]] = []
        self._lock = threading.Lock()
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._check_schema()

    # --- connections ------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,  # used by one thread only; close() may run elsewhere
            )
        except sqlite3.Error as exc:
            raise QueueError(f"cannot open queue database {self.path}: {exc}") from exc
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._begin(db)
            try:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                if db.execute("PRAGMA user_version").fetchone()[0] == 0:
                    db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
                db.execute("COMMIT")
            except BaseException:
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
        except BaseException as exc:
            db.close()
            if isinstance(exc, sqlite3.Error):
                raise QueueError(f"cannot open queue database {self.path}: {exc}") from exc
            raise
        return db

    def _db(self) -> sqlite3.Connection:
        """One connection per thread and per process (a forked child must not reuse its
        parent's connection)."""
        if self._closed:
            raise QueueError(f"queue {self.name!r} at {self.path} is closed")
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None or getattr(self._local, "pid", None) != os.getpid():
            db = self._connect()
            self._local.db, self._local.pid = db, os.getpid()
            with self._lock:
                self._connections.append((os.getpid(), db))
        return db

    def _begin(self, db: sqlite3.Connection) -> None:
        """Take the write lock, retrying every millisecond or so with jitter.

        SQLite's own busy handler backs off to 100-ms sleeps, so a process that commits in
        a tight loop (a worker draining a backlog) starves the others, a gateway's send
        included; short random retries share the lock fairly.
        """
        deadline = time.monotonic() + self.busy_timeout_s
        db.execute("PRAGMA busy_timeout=0")
        try:
            while True:
                try:
                    db.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                time.sleep(random.uniform(0.0002, 0.002))
        finally:
            db.execute(f"PRAGMA busy_timeout={round(self.busy_timeout_s * 1000)}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        try:
            self._begin(db)
        except sqlite3.Error as exc:
            raise QueueError(f"queue {self.name!r} at {self.path}: {exc}") from exc
        try:
            yield db
            db.execute("COMMIT")
        except BaseException as exc:
            with suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise QueueError(f"queue {self.name!r} at {self.path}: {exc}") from exc
            raise

    def _check_schema(self) -> None:
        version = self._db().execute("PRAGMA user_version").fetchone()[0]
        if version != _SCHEMA_VERSION:
            raise QueueError(
                f"queue database {self.path} has schema version {version}, expected "
                f"{_SCHEMA_VERSION}"
            )

    def close(self) -> None:
        """Close every thread's connection; nothing is lost, all state is in the file."""
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for pid, db in connections:
            if pid == os.getpid():  # a parent's connection inherited by fork is not ours
                db.close()

    def __enter__(self) -> SqliteQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- MessageQueue -----------------------------------------------------------------------

    def send(self, body: str, attributes: dict[str, str] | None = None) -> str:
        attrs = check_outgoing(body, attributes)
        message_id = uuid.uuid4().hex
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO messages (queue, id, body, attributes, sent_at, visible_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (self.name, message_id, body, json.dumps(attrs), now, now),
            )
        return message_id

    def receive(
        self, max_messages: int = 1, wait_s: float = 20.0, visibility_s: int | None = None
    ) -> list[Message]:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        hide_s = self.visibility_s if visibility_s is None else visibility_s
        deadline = time.monotonic() + max(0.0, wait_s)
        while True:
            got = self._receive_once(max_messages, hide_s)
            left = deadline - time.monotonic()
            if got or left <= 0:
                return got
            time.sleep(min(self.poll_interval_s, left))

    def _receive_once(self, max_messages: int, hide_s: int) -> list[Message]:
        delivered: list[Message] = []
        with self._transaction() as db:
            now = time.time()
            after = -1
            while len(delivered) < max_messages:
                rows = db.execute(
                    "SELECT seq, id, body, attributes, sent_at, receive_count FROM messages "
                    "WHERE queue = ? AND visible_at <= ? AND seq > ? ORDER BY seq LIMIT ?",
                    (self.name, now, after, max_messages - len(delivered)),
                ).fetchall()
                if not rows:
                    break
                after = rows[-1][0]
                for _, message_id, body, attrs, sent_at, count in rows:
                    if count >= self.max_receives:
                        self._bury(
                            db,
                            message_id,
                            MAX_RECEIVES_EXCEEDED,
                            f"received {count} times without being deleted "
                            f"(max_receives={self.max_receives})",
                        )
                        continue
                    receipt = uuid.uuid4().hex
                    db.execute(
                        "UPDATE messages SET receive_count = receive_count + 1, receipt = ?, "
                        "visible_at = ? WHERE id = ?",
                        (receipt, now + hide_s, message_id),
                    )
                    delivered.append(
                        Message(
                            id=message_id,
                            receipt=receipt,
                            body=body,
                            receive_count=count + 1,
                            attributes=_received_attributes(attrs, sent_at),
                        )
                    )
        return delivered

    def delete(self, message: Message) -> None:
        with self._transaction() as db:
            if self._holder(db, message, missing_ok=True):
                db.execute("DELETE FROM messages WHERE id = ?", (message.id,))

    def extend(self, message: Message, visibility_s: int) -> None:
        with self._transaction() as db:
            self._holder(db, message)
            db.execute(
                "UPDATE messages SET visible_at = ? WHERE id = ?",
                (time.time() + visibility_s, message.id),
            )

    def release(self, message: Message, delay_s: int = 0) -> None:
        with self._transaction() as db:
            self._holder(db, message)
            db.execute(
                "UPDATE messages SET visible_at = ? WHERE id = ?",
                (time.time() + max(0, delay_s), message.id),
            )

    def dead_letter(self, message: Message, code: str, reason: str) -> None:
        with self._transaction() as db:
            self._holder(db, message)
            self._bury(db, message.id, code, reason)

    def depth(self) -> QueueDepth:
        now = time.time()
        db = self._db()
        try:
            visible, in_flight = db.execute(
                "SELECT COALESCE(SUM(visible_at <= ?), 0), COALESCE(SUM(visible_at > ?), 0) "
                "FROM messages WHERE queue = ?",
                (now, now, self.name),
            ).fetchone()
            (dead,) = db.execute(
                "SELECT COUNT(*) FROM dead_letters WHERE queue = ?", (self.name,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise QueueError(f"queue {self.name!r} at {self.path}: {exc}") from exc
        return QueueDepth(visible=int(visible), in_flight=int(in_flight), dead=int(dead))

    # --- dead letters -----------------------------------------------------------------------

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest dead letters first, for inspection (``sevensense queue dead``)."""
        try:
            rows = (
                self._db()
                .execute(
                    "SELECT id, body, attributes, sent_at, receive_count, code, reason, dead_at "
                    "FROM dead_letters WHERE queue = ? ORDER BY seq LIMIT ?",
                    (self.name, limit),
                )
                .fetchall()
            )
        except sqlite3.Error as exc:
            raise QueueError(f"queue {self.name!r} at {self.path}: {exc}") from exc
        return [
            DeadLetter(
                id=row[0],
                body=row[1],
                attributes=json.loads(row[2]),
                sent_at=row[3],
                receive_count=row[4],
                code=row[5],
                reason=row[6],
                dead_at=row[7],
            )
            for row in rows
        ]

    def redrive_dead(self, ids: Sequence[str] | None = None) -> int:
        """Put dead letters back (all, or those ``ids``) as fresh messages with a zero receive
        count, at the back of the queue; returns how many moved."""
        where, params = "queue = ?", [self.name]
        if ids is not None:
            if not ids:
                return 0
            where += f" AND id IN ({', '.join('?' for _ in ids)})"
            params += list(ids)
        with self._transaction() as db:
            now = time.time()
            moved = db.execute(
                "INSERT INTO messages (queue, id, body, attributes, sent_at, visible_at) "
                f"SELECT queue, id, body, attributes, sent_at, ? FROM dead_letters "
                f"WHERE {where} ORDER BY seq",
                (now, *params),
            ).rowcount
            db.execute(f"DELETE FROM dead_letters WHERE {where}", params)
        return int(moved)

    # --- helpers ----------------------------------------------------------------------------

    def _holder(self, db: sqlite3.Connection, message: Message, missing_ok: bool = False) -> bool:
        """Whether ``message``'s receipt is the latest; raises QueueError when it is not."""
        row = db.execute(
            "SELECT receipt FROM messages WHERE id = ? AND queue = ?", (message.id, self.name)
        ).fetchone()
        if row is None:
            if missing_ok:
                return False
            raise QueueError(
                f"message {message.id} is no longer in queue {self.name!r} (deleted or "
                "dead-lettered)",
                queue=self.name,
                message_id=message.id,
                stale_receipt=True,
            )
        if row[0] != message.receipt:
            raise QueueError(
                f"stale receipt for message {message.id} in queue {self.name!r}: it was "
                "received again after its visibility timeout, and only the latest receiver "
                "may delete, extend or release it",
                queue=self.name,
                message_id=message.id,
                stale_receipt=True,
            )
        return True

    def _bury(self, db: sqlite3.Connection, message_id: str, code: str, reason: str) -> None:
        db.execute(
            "INSERT INTO dead_letters (queue, id, body, attributes, sent_at, receive_count, "
            "code, reason, dead_at) SELECT queue, id, body, attributes, sent_at, "
            "receive_count, ?, ?, ? FROM messages WHERE id = ?",
            (code, reason, time.time(), message_id),
        )
        db.execute("DELETE FROM messages WHERE id = ?", (message_id,))


def _received_attributes(stored: str, sent_at: float) -> dict[str, str]:
    attrs: dict[str, Any] = json.loads(stored)
    attrs[SENT_TIMESTAMP] = str(round(sent_at * 1000))
    return {str(k): str(v) for k, v in attrs.items()}
