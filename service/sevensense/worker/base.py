"""What a message handler is, and what it may tell the runner.

A handler gets one received message and its :class:`Heartbeat` and returns a
:class:`HandlerResult` on success; it raises on failure. The runner, not the handler,
decides what a failure means for the message (retry with back-off, dead-letter queue),
so that every kind of message gets the same at-least-once treatment. A handler must be
idempotent: the same message can arrive twice (SQS is at-least-once, and a worker can die
between writing a result and deleting the message).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sevensense.errors import SevensenseError
from sevensense.queues.base import Message
from sevensense.settings import Settings

if TYPE_CHECKING:
    from sevensense.inference.engine import EmbeddingEngine


@dataclass(frozen=True)
class HandlerResult:
    """``outcome`` labels the metrics and the log line: done, exists, skipped, missing, ..."""

    outcome: str = "done"
    audio_s: float = 0.0
    windows: int = 0
    detail: str = ""


class PermanentError(Exception):
    """Marks an error that no retry can cure: the message goes to the DLQ at once."""


class RecordingError(SevensenseError):
    """A failure whose code was decided elsewhere, e.g. by a recording's decode report."""

    def __init__(self, failure_code: str, message: str, **details: Any) -> None:
        super().__init__(message, **details)
        self.failure_code = failure_code


class MalformedMessageError(SevensenseError, PermanentError):
    """A body the worker cannot even classify (not JSON, no known kind, bad S3 event)."""

    code = "malformed_message"
    http_status = 400


class CancelledError(SevensenseError):
    """The worker is shutting down and its grace period is over: give the message back."""

    code = "cancelled"
    http_status = 503


class Heartbeat:
    """Handed to a handler with its message while the runner keeps the message hidden.

    The runner extends the message's visibility on its own thread, so a handler need not
    call anything; it may report progress (shown in the heartbeat log lines) and should call
    :meth:`check` now and then so that a shutdown past its grace period can stop it.
    """

    def __init__(self, message: Message, queue: str) -> None:
        self.message = message
        self.queue = queue
        self.audio_s = 0.0
        self._cancel = threading.Event()

    def progress(self, audio_s: float) -> None:
        self.audio_s = audio_s

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        if self._cancel.is_set():
            raise CancelledError(f"message {self.message.id}: shutdown, released unfinished")


Handler = Callable[[Message, Heartbeat], "HandlerResult | Mapping[str, Any] | None"]
"""Process one message; raise on failure. The runner deletes the message on return.

A handler may return a :class:`HandlerResult`, a mapping with any of ``outcome`` (or
``status``), ``audio_s``, ``windows`` and ``detail``, or None (outcome ``done``)."""


def as_result(value: HandlerResult | Mapping[str, Any] | None) -> HandlerResult:
    if value is None:
        return HandlerResult()
    if isinstance(value, HandlerResult):
        return value
    outcome = value.get("outcome") or value.get("status") or "done"
    if value.get("duplicate"):
        outcome = "exists"
    return HandlerResult(
        outcome=str(outcome),
        audio_s=float(value.get("audio_s") or 0.0),
        windows=int(value.get("windows") or 0),
        detail=str(value.get("detail") or value.get("job_id") or ""),
    )


@dataclass(frozen=True)
class WorkerContext:
    """What handler factories get: one engine and one S3 client shared by all threads."""

    settings: Settings
    engine: EmbeddingEngine
    s3: Any


def failure_code(exc: BaseException) -> str:
    code = getattr(exc, "failure_code", None)
    if isinstance(code, str):
        return code
    if isinstance(exc, SevensenseError):
        return exc.code
    return "internal_error"


def failure_reason(exc: BaseException, limit: int = 2000) -> str:
    text = exc.message if isinstance(exc, SevensenseError) else f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 1] + "…"
