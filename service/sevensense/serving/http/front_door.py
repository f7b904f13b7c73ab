"""The front door: what the entry decides from the request line and headers alone, before
it reads a byte of the body, and the limits it keeps while the body arrives.

FastAPI parses a multipart body before it runs the endpoint's dependencies, so a check
written as a dependency runs only after the whole upload has arrived: 60 MB from a client
with no key, read to the last byte, just to answer 401. This ASGI middleware sits in front
of FastAPI and answers at once, from the headers:

- 401/403 for a missing, unknown or under-scoped key, and 429 over the key's rate limit;
- 413 when ``Content-Length`` is over ``max_upload_mb``;
- 503 (``Retry-After``) when the key, or the worker as a whole, already has its limit of
  uploads in progress, or when the task is stopping (``draining``, :mod:`..lifecycle`).

Such a refusal carries ``Connection: close``: the server closes the connection without
consuming the upload (a well-behaved client, curl or httpx, stops sending when the answer
arrives). While a body arrives, it is cut with 413 as soon as it passes the limit (chunked
uploads), and with 408 when it arrives too slowly (:class:`UploadPace`). The endpoint's own
dependency reuses the key the front door checked, so a request is charged to the rate limit
once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sevensense.errors import (
    DrainingError,
    OverloadedError,
    PayloadTooLargeError,
    SevensenseError,
    UploadTooSlowError,
)
from sevensense.identity import ApiKeyRecord
from sevensense.identity import Scope as KeyScope
from sevensense.serving.access.admission import admit
from sevensense.serving.access.keys import API_KEY_HEADER, KeyStore, key_from_headers
from sevensense.serving.access.ratelimit import RateLimiter, retry_after_header
from sevensense.serving.lifecycle import draining
from sevensense.serving.telemetry.metrics import metrics
from sevensense.settings import FrontDoorSettings, ServingSettings

log = logging.getLogger(__name__)

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
STATE_KEY = "api_key"  # scope["state"] entry: the record the front door admitted
# Before refusing a request that has a body, read (and drop) at most this much of it, for at
# most this long: closing a socket with unread data makes the kernel send a reset, which
# can reach a simple client before it has read the answer. A larger or slower upload is
# not waited for. A client that sent ``Expect: 100-continue`` has sent no body: nothing to
# read.
DRAIN_BYTES = 512 * 1024
DRAIN_S = 0.5


def request_id_of(headers: dict[bytes, bytes]) -> str:
    """The client's ``X-Request-ID`` when it is sane, else a new one."""
    given = headers.get(b"x-request-id", b"").decode("latin-1")
    return given if REQUEST_ID.match(given) else uuid.uuid4().hex


def error_payload(
    status: int,
    code: str,
    message: str,
    request_id: str,
    details: dict[str, Any] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The one error shape, ``{"error": {code, message, request_id[, details]}}``, and its
    headers (``Retry-After`` on 429 and 503)."""
    body: dict[str, Any] = {"code": code, "message": message, "request_id": request_id}
    if details:
        body["details"] = details
    headers = {"X-Request-ID": request_id}
    if status in (429, 503):
        headers["Retry-After"] = retry_after_header(float((details or {}).get("retry_after_s", 1)))
    return json.dumps({"error": body}).encode(), headers


class UploadPace:
    """The slowest body the entry waits for: at least ``min_bytes_per_s`` × ``window_s``
    bytes in every ``window_s`` seconds (the first window starts with the request).

    A cumulative average would let a client send fast for a second and then hold the
    connection for an hour; a sliding window does not. The rule also bounds silence: no
    byte for ``window_s`` seconds cuts the upload. Pure bookkeeping, with the clock passed
    in, so it is tested without a server.
    """

    def __init__(self, min_bytes_per_s: float, window_s: float, start: float) -> None:
        self.need = min_bytes_per_s * window_s
        self.window_s = window_s
        self.total = 0
        self._marks: deque[tuple[float, int]] = deque([(start, 0)])

    def add(self, n: int, now: float) -> None:
        self.total += n
        self._marks.append((now, self.total))
        while len(self._marks) > 1 and self._marks[1][0] <= now - self.window_s:
            self._marks.popleft()

    def deadline(self) -> float:
        """When the upload is too slow if nothing more arrives before then."""
        if self.need <= 0:
            return math.inf
        for at, cumulative in self._marks:
            if self.total - cumulative < self.need:
                return at + self.window_s
        return math.inf  # unreachable: the last mark has nothing after it


class UploadSlots:
    """Uploads in progress, per key and in total (per gateway worker, one event loop)."""

    def __init__(self, per_key: int, total: int) -> None:
        self.per_key = per_key
        self.total = total
        self._by_key: Counter[str] = Counter()

    def __len__(self) -> int:
        return sum(self._by_key.values())

    def acquire(self, key_id: str) -> str | None:
        """None when admitted, else why not."""
        if len(self) >= self.total:
            return f"{self.total} uploads in progress on this worker; retry shortly"
        if self._by_key[key_id] >= self.per_key:
            return f"key {key_id} already has {self.per_key} uploads in progress; retry shortly"
        self._by_key[key_id] += 1
        return None

    def release(self, key_id: str) -> None:
        self._by_key[key_id] -= 1
        if self._by_key[key_id] <= 0:
            del self._by_key[key_id]


@dataclass(frozen=True)
class Guards:
    keys: KeyStore
    limiter: RateLimiter


def _has_body(headers: dict[bytes, bytes]) -> bool:
    length = headers.get(b"content-length", b"0").strip()
    chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
    return chunked or not length.isdigit() or int(length) > 0


class FrontDoor:
    """ASGI middleware; the outermost layer of the partner API (see the module docstring).

    ``required_scope`` maps a request to the scope its route needs (None: open, e.g. the
    OpenAPI document); ``guards`` gives the key store and rate limiter, or None while the
    service is still starting (then the route's own dependency decides)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        serving: ServingSettings,
        required_scope: Callable[[Scope], KeyScope | None],
        guards: Callable[[], Guards | None],
        endpoint_of: Callable[[Scope], str] = lambda scope: "unmatched",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.serving = serving
        self.config: FrontDoorSettings = serving.front_door
        self.max_bytes = int(serving.max_upload_mb * 1024 * 1024)
        self.required_scope = required_scope
        self.guards = guards
        self.endpoint_of = endpoint_of
        self.clock = clock
        self.slots = UploadSlots(self.config.max_uploads_per_key, self.config.max_uploads_total)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        state = scope.setdefault("state", {})
        state["request_id"] = rid = request_id_of(headers)
        body = _has_body(headers)
        try:
            if body and draining():
                metrics().front_door_refusals.labels("draining").inc()
                raise DrainingError("this server is stopping; send the upload again", 1.0)
            self._check_length(headers)
            record = self._admit(scope, headers)
        except SevensenseError as exc:
            if body:
                await self._drain(receive, headers)
            await self._refuse(scope, send, exc, rid, close=body)
            return
        if record is not None:
            state[STATE_KEY] = record
        if not body:
            await self.app(scope, receive, send)
            return
        holder = record.id if record is not None else f"client:{(scope.get('client') or ('-',))[0]}"
        refused = self.slots.acquire(holder)
        if refused is not None:
            metrics().front_door_refusals.labels("upload_slots").inc()
            await self._drain(receive, headers)
            await self._refuse(
                scope, send, OverloadedError(refused, retry_after_s=1.0), rid, close=True
            )
            return
        await self._guarded(scope, receive, send, rid, lambda: self.slots.release(holder))

    # --- decided from the headers --------------------------------------------------------

    def _check_length(self, headers: dict[bytes, bytes]) -> None:
        length = headers.get(b"content-length", b"").strip()
        if length and not length.isdigit():
            raise PayloadTooLargeError(f"Content-Length {length[:32]!r} is not a byte count")
        if length and int(length) > self.max_bytes:
            raise PayloadTooLargeError(
                f"request body of {int(length)} bytes is over the {self.max_bytes}-byte limit"
            )

    def _admit(self, scope: Scope, headers: dict[bytes, bytes]) -> ApiKeyRecord | None:
        needed = self.required_scope(scope)
        if needed is None or not self.serving.auth_required:
            return None
        guards = self.guards()
        if guards is None:
            return None
        presented = key_from_headers(
            headers.get(b"authorization", b"").decode("latin-1") or None,
            headers.get(API_KEY_HEADER.lower().encode(), b"").decode("latin-1") or None,
        )
        try:
            return admit(guards.keys, guards.limiter, presented, needed)
        except SevensenseError as exc:
            metrics().front_door_refusals.labels(exc.code).inc()
            raise

    # --- while the body arrives --------------------------------------------------------------

    async def _guarded(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        rid: str,
        release: Callable[[], None],
    ) -> None:
        pace = UploadPace(
            self.config.upload_min_kib_per_s * 1024, self.config.upload_window_s, self.clock()
        )
        done = False
        released = False
        cut: SevensenseError | None = None
        started = False

        def free() -> None:
            nonlocal released
            if not released:
                released = True
                release()

        async def guarded_receive() -> Message:
            nonlocal done, cut
            if done:
                return await receive()
            if cut is not None:
                raise cut
            timeout = max(0.0, pace.deadline() - self.clock())
            try:
                message = await asyncio.wait_for(receive(), timeout)
            except TimeoutError:
                cut = UploadTooSlowError(
                    f"upload slower than {self.config.upload_min_kib_per_s:g} KiB/s over "
                    f"{self.config.upload_window_s:g} s ({pace.total} bytes received); cut",
                    received_bytes=pace.total,
                )
                metrics().front_door_refusals.labels("upload_too_slow").inc()
                free()
                raise cut from None
            if message["type"] == "http.request":
                pace.add(len(message.get("body", b"")), self.clock())
                if pace.total > self.max_bytes:
                    cut = PayloadTooLargeError(
                        f"request body over the {self.max_bytes}-byte limit; cut while streaming"
                    )
                    metrics().front_door_refusals.labels("payload_too_large").inc()
                    free()
                    raise cut
                if not message.get("more_body", False):
                    done = True
                    free()
            else:  # http.disconnect
                done = True
                free()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if cut is not None:
                return  # the front door answers for a cut body, not the app's parser
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if cut is None:
                raise
        finally:
            free()
        if cut is not None and not started:
            await self._refuse(scope, send, cut, rid, close=True)

    # --- answering ---------------------------------------------------------------------------

    async def _drain(self, receive: Receive, headers: dict[bytes, bytes]) -> None:
        if b"100-continue" in headers.get(b"expect", b"").lower():
            return
        deadline = self.clock() + DRAIN_S
        drained = 0
        while drained < DRAIN_BYTES:
            remaining = deadline - self.clock()
            if remaining <= 0:
                return
            try:
                message = await asyncio.wait_for(receive(), remaining)
            except TimeoutError:
                return
            if message["type"] != "http.request":
                return
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _refuse(
        self, scope: Scope, send: Send, exc: SevensenseError, rid: str, *, close: bool
    ) -> None:
        body, headers = error_payload(exc.http_status, exc.code, exc.message, rid, exc.details)
        headers["Content-Type"] = "application/json"
        headers["Content-Length"] = str(len(body))
        if close:
            headers["Connection"] = "close"
        await send(
            {
                "type": "http.response.start",
                "status": exc.http_status,
                "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": body})
        metrics().http_requests.labels(self.endpoint_of(scope), str(exc.http_status)).inc()
        log.info("front door refused %s %s: %s", scope.get("method"), scope.get("path"), exc.code)
