"""The long-poll loop of ``sevensense worker``: at-least-once delivery made safe.

``concurrency`` threads each receive one message at a time, alternating between the
queues they serve, and dispatch it by kind through a handler table (``handlers[kind]``;
see :mod:`sevensense.worker.base` for the :data:`Handler` contract). A heartbeat thread
keeps every in-flight message hidden by extending its visibility every third of its
timeout, so a multi-hour recording is never handed to a second worker meanwhile, while a
worker that dies stops extending and its message reappears within one timeout.

Outcomes: success deletes the message. A failure is retried after an exponential back-off
(the message is released with that delay) until its receive count reaches the queue's
``max_receives``; the last failure, or a permanent one, moves it to the dead-letter queue
with the failure code and reason attached. One message never stops the worker: every
error is caught per message and logged with the message id.

Shutdown (SIGTERM/SIGINT, :meth:`Worker.request_stop`): nothing new is received; in-flight
messages get ``shutdown_grace_s`` to finish, then are cancelled and released (visible at
once to the next worker). Drain mode (``once``) ends when a poll finds nothing and the
queues report nothing visible or in flight, so messages hidden by a crashed worker or
waiting out a back-off are still processed before it exits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sevensense.queues.base import Message, MessageQueue
from sevensense.worker.base import (
    CancelledError,
    Handler,
    HandlerResult,
    Heartbeat,
    MalformedMessageError,
    PermanentError,
    as_result,
    failure_code,
    failure_reason,
)
from sevensense.worker.events import message_kind
from sevensense.worker.metrics import WorkerMetrics

__all__ = [
    "Handler",
    "HandlerResult",
    "Heartbeat",
    "PolledQueue",
    "RunStats",
    "RunnerOptions",
    "Worker",
]

log = logging.getLogger(__name__)


class UnknownKindError(MalformedMessageError):
    code = "unknown_kind"


@dataclass(frozen=True)
class PolledQueue:
    """A queue the worker serves; ``name`` labels logs and metrics (batch, deferred)."""

    name: str
    queue: MessageQueue
    visibility_s: int

    @property
    def extend_every_s(self) -> float:
        return max(1.0, self.visibility_s / 3)


@dataclass(frozen=True)
class RunnerOptions:
    concurrency: int = 1
    wait_s: int = 20
    once: bool = False
    max_messages: int | None = None
    shutdown_grace_s: float = 30.0
    backoff_base_s: float = 10.0
    backoff_max_s: float = 900.0
    cancel_wait_s: float = 5.0


@dataclass
class RunStats:
    received: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    audio_s: float = 0.0
    windows: int = 0
    first_receipt: float | None = None
    last_outcome: float | None = None
    stragglers: int = 0

    @property
    def busy_s(self) -> float:
        if self.first_receipt is None or self.last_outcome is None:
            return 0.0
        return self.last_outcome - self.first_receipt

    def to_dict(self) -> dict[str, Any]:
        busy = self.busy_s
        return {
            "received": self.received,
            "outcomes": dict(sorted(self.outcomes.items())),
            "audio_s": round(self.audio_s, 3),
            "windows": self.windows,
            "busy_s": round(busy, 3),
            "x_realtime": round(self.audio_s / busy, 2) if busy > 0 else None,
            "stragglers": self.stragglers,
        }


@dataclass
class _InFlight:
    polled: PolledQueue
    message: Message
    heartbeat: Heartbeat
    next_extend: float
    released: bool = False


class Worker:
    def __init__(
        self,
        queues: Sequence[PolledQueue],
        handlers: Mapping[str, Handler],
        options: RunnerOptions | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        if not queues:
            raise ValueError("a worker needs at least one queue")
        self.queues = list(queues)
        self.handlers = dict(handlers)
        self.options = options or RunnerOptions()
        self.metrics = metrics or WorkerMetrics()
        self.stats = RunStats()
        self._stopping = threading.Event()
        self._finished = threading.Event()
        self._stop_requests = 0
        self._deadline = float("inf")
        self._lock = threading.Lock()
        self._entries: dict[str, _InFlight] = {}
        self._remaining = self.options.max_messages

    # --- control ----------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Safe in a signal handler: only counts; the run loop acts on it. A second request
        ends the grace period at once."""
        self._stop_requests += 1

    def run(self) -> RunStats:
        threads = [
            threading.Thread(target=self._loop, args=(i,), name=f"worker-{i}", daemon=True)
            for i in range(self.options.concurrency)
        ]
        beat = threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True)
        beat.start()
        for thread in threads:
            thread.start()
        log.info(
            "worker started: %d thread(s) on %s; handlers for %s",
            len(threads),
            ", ".join(f"{q.name} ({q.queue.name})" for q in self.queues),
            ", ".join(sorted(self.handlers)),
        )
        while any(t.is_alive() for t in threads):
            self._take_stop_requests()
            if self._stopping.is_set():
                self._shutdown(threads)
                break
            time.sleep(0.1)
        self._finished.set()
        beat.join(timeout=2.0)
        self.stats.stragglers = sum(t.is_alive() for t in threads)
        log.info("worker finished: %s", self.stats.to_dict())
        return self.stats

    def _take_stop_requests(self) -> None:
        if self._stop_requests and not self._stopping.is_set():
            self._deadline = time.monotonic() + self.options.shutdown_grace_s
            self._stopping.set()
            log.info(
                "stop requested: receiving no more; %d in-flight message(s) get %.0f s to finish",
                len(self._entries),
                self.options.shutdown_grace_s,
            )
        if self._stop_requests > 1:
            self._deadline = min(self._deadline, time.monotonic())

    def _shutdown(self, threads: list[threading.Thread]) -> None:
        while time.monotonic() < self._deadline:
            if not any(t.is_alive() for t in threads):
                return
            time.sleep(0.1)
            self._take_stop_requests()
        with self._lock:
            entries = list(self._entries.values())
        if not entries:
            return
        log.warning("grace period over: cancelling %d in-flight message(s)", len(entries))
        for entry in entries:
            entry.heartbeat.cancel()
        until = time.monotonic() + self.options.cancel_wait_s
        while self._entries and time.monotonic() < until:
            time.sleep(0.05)
        with self._lock:
            leftover = [e for e in self._entries.values() if not e.released]
            for entry in leftover:
                entry.released = True
        for entry in leftover:
            self._give_back(entry.polled, entry.message, "shutdown, handler did not stop")

    # --- receiving --------------------------------------------------------------------------

    def _reserve(self) -> bool:
        with self._lock:
            if self._remaining is None:
                return True
            if self._remaining <= 0:
                return False
            self._remaining -= 1
            return True

    def _unreserve(self) -> None:
        with self._lock:
            if self._remaining is not None:
                self._remaining += 1

    def _wait_per_queue(self) -> int:
        wait = self.options.wait_s
        if len(self.queues) == 1 or wait == 0:
            return wait
        return max(1, wait // len(self.queues))

    def _loop(self, index: int) -> None:
        turn = index % len(self.queues)
        errors = 0
        while not self._stopping.is_set():
            if not self._reserve():
                return
            got: tuple[PolledQueue, Message] | None = None
            failed = False
            for step in range(len(self.queues)):
                polled = self.queues[(turn + step) % len(self.queues)]
                try:
                    received = polled.queue.receive(
                        1, wait_s=self._wait_per_queue(), visibility_s=polled.visibility_s
                    )
                except Exception as exc:
                    failed = True
                    self.metrics.receive_errors.labels(polled.name).inc()
                    log.warning("receive from %s failed: %s", polled.name, exc)
                    continue
                if received:
                    got = (polled, received[0])
                    break
                if self._stopping.is_set():
                    break
            turn = (turn + 1) % len(self.queues)
            if got is None:
                self._unreserve()
                errors = errors + 1 if failed else 0
                if failed:
                    self._stopping.wait(min(30.0, 2.0**errors))
                if self.options.once and not failed and self._drained():
                    log.info("queues drained; thread %d done", index)
                    return
                continue
            errors = 0
            polled, message = got
            if self._stopping.is_set():
                self._give_back(polled, message, "received during shutdown")
                return
            self._handle(polled, message)

    def _drained(self) -> bool:
        in_flight = 0
        for polled in self.queues:
            try:
                depth = polled.queue.depth()
            except Exception as exc:
                log.warning("depth of %s unavailable: %s", polled.name, exc)
                return False
            if depth.visible > 0:
                return False
            in_flight += depth.in_flight
        with self._lock:
            mine = len(self._entries)
        return in_flight <= mine

    # --- one message ------------------------------------------------------------------------

    def _handle(self, polled: PolledQueue, message: Message) -> None:
        started = time.perf_counter()
        heartbeat = Heartbeat(message, polled.name)
        entry = _InFlight(polled, message, heartbeat, time.monotonic() + polled.extend_every_s)
        with self._lock:
            self._entries[message.id] = entry
            self.stats.received += 1
            if self.stats.first_receipt is None:
                self.stats.first_receipt = time.perf_counter()
        self.metrics.in_flight.labels(polled.name).inc()
        kind = "unknown"
        result: HandlerResult | None = None
        try:
            kind = message_kind(message.body)
            handler = self.handlers.get(kind)
            if handler is None:
                raise UnknownKindError(
                    f"no handler for message kind {kind!r} "
                    f"(known: {', '.join(sorted(self.handlers))})"
                )
            log.info(
                "%s message %s: kind %s, receive %d of %d",
                polled.name,
                message.id,
                kind,
                message.receive_count,
                polled.queue.max_receives,
            )
            result = as_result(handler(message, heartbeat))
        except CancelledError:
            outcome = "released"
            if not self._mark_released(entry):
                self._give_back(polled, message, "cancelled at shutdown")
        except Exception as exc:
            outcome = self._fail(polled, message, kind, exc)
        else:
            outcome = result.outcome
            self._delete(polled, message)
        finally:
            with self._lock:
                self._entries.pop(message.id, None)
            self.metrics.in_flight.labels(polled.name).dec()
        elapsed = time.perf_counter() - started
        self._record(polled, kind, outcome, elapsed, result)
        detail = f" ({result.detail})" if result is not None and result.detail else ""
        log.info("%s message %s: %s in %.2f s%s", polled.name, message.id, outcome, elapsed, detail)

    def _record(
        self,
        polled: PolledQueue,
        kind: str,
        outcome: str,
        elapsed: float,
        result: HandlerResult | None,
    ) -> None:
        m = self.metrics
        m.messages.labels(polled.name, kind, outcome).inc()
        m.processing_seconds.labels(polled.name, kind).observe(elapsed)
        with self._lock:
            self.stats.outcomes[outcome] += 1
            self.stats.last_outcome = time.perf_counter()
            if result is not None:
                self.stats.audio_s += result.audio_s
                self.stats.windows += result.windows
        if result is not None and result.windows:
            m.audio_seconds.labels(polled.name, kind).inc(result.audio_s)
            m.windows.labels(polled.name, kind).inc(result.windows)
            if elapsed > 0:
                m.realtime_factor.labels(polled.name, kind).observe(result.audio_s / elapsed)

    def _fail(self, polled: PolledQueue, message: Message, kind: str, exc: Exception) -> str:
        code, reason = failure_code(exc), failure_reason(exc)
        if code == "internal_error":
            log.error("%s message %s: unexpected error", polled.name, message.id, exc_info=exc)
        queue = polled.queue
        if isinstance(exc, PermanentError) or message.receive_count >= queue.max_receives:
            why = "permanent failure" if isinstance(exc, PermanentError) else "last receive"
            try:
                queue.dead_letter(message, code, reason)
            except Exception as dl_exc:
                log.error(
                    "%s message %s: [%s] %s; could not dead-letter it (%s): it returns after "
                    "its visibility timeout",
                    polled.name,
                    message.id,
                    code,
                    reason,
                    dl_exc,
                )
                return "failed"
            self.metrics.dead_lettered.labels(polled.name, code).inc()
            log.error(
                "%s message %s dead-lettered (%s, receive %d of %d): [%s] %s",
                polled.name,
                message.id,
                why,
                message.receive_count,
                queue.max_receives,
                code,
                reason,
            )
            return "dead_lettered"
        delay = self._backoff(message.receive_count)
        log.warning(
            "%s message %s failed (receive %d of %d), retry in %d s: [%s] %s",
            polled.name,
            message.id,
            message.receive_count,
            queue.max_receives,
            delay,
            code,
            reason,
        )
        try:
            queue.release(message, delay)
        except Exception as rel_exc:
            log.warning("%s message %s: release failed (%s)", polled.name, message.id, rel_exc)
        return "retry"

    def _backoff(self, receive_count: int) -> int:
        base, cap = self.options.backoff_base_s, self.options.backoff_max_s
        return int(min(cap, base * 2 ** max(0, receive_count - 1)))

    def _delete(self, polled: PolledQueue, message: Message) -> None:
        try:
            polled.queue.delete(message)
        except Exception as exc:
            log.warning(
                "%s message %s: done, but delete failed (%s); a redelivery will find the "
                "result and skip",
                polled.name,
                message.id,
                exc,
            )

    def _mark_released(self, entry: _InFlight) -> bool:
        with self._lock:
            already = entry.released
            entry.released = True
            return already

    def _give_back(self, polled: PolledQueue, message: Message, why: str) -> None:
        try:
            polled.queue.release(message, 0)
            log.info("%s message %s released (%s)", polled.name, message.id, why)
        except Exception as exc:
            log.warning(
                "%s message %s: release failed (%s); it returns after its visibility timeout",
                polled.name,
                message.id,
                exc,
            )

    # --- visibility -------------------------------------------------------------------------

    def _heartbeats(self) -> None:
        while not self._finished.wait(0.25):
            now = time.monotonic()
            with self._lock:
                due = [e for e in self._entries.values() if now >= e.next_extend]
            for entry in due:
                self._extend(entry)

    def _extend(self, entry: _InFlight) -> None:
        polled, message = entry.polled, entry.message
        if entry.released:
            return
        try:
            polled.queue.extend(message, polled.visibility_s)
        except Exception as exc:
            entry.next_extend = time.monotonic() + min(5.0, polled.extend_every_s)
            with self._lock:
                gone = message.id not in self._entries
            if not gone:
                self.metrics.visibility_extensions.labels(polled.name, "failed").inc()
                log.warning(
                    "%s message %s: visibility extension failed: %s", polled.name, message.id, exc
                )
            return
        entry.next_extend = time.monotonic() + polled.extend_every_s
        self.metrics.visibility_extensions.labels(polled.name, "ok").inc()
        log.info(
            "%s message %s: visibility extended by %d s (%.0f s of audio done)",
            polled.name,
            message.id,
            polled.visibility_s,
            entry.heartbeat.audio_s,
        )
