"""``WS /stream``: one connection of a live stream (protocol in :mod:`.protocol`).

Two tasks per connection. The reader takes frames, decodes, resamples and cuts windows
with the file path's code (:mod:`sevensense.audio.live`) and hands each frame's windows to
the gateway at once, so they join the model services' adaptive batches with ``/embed``
traffic; between windows a stream holds no model-service slot. The sender sends each
window's result as soon as its call returns, in the order the windows were cut.

Flow control, both ways, so nothing grows without bound:
- audio faster than ``max_speed`` × real time (after ``burst_s``) gets a ``throttle``
  message and the reader stops reading for the excess (TCP pushes back on the client);
- at most ``max_pending_windows`` windows wait for an answer; the reader pauses beyond;
- a result the client does not take within ``slow_reader_s`` ends the connection (4408).

Stopping (SIGTERM, :meth:`StreamEndpoint.drain`): each connection stops reading, answers
every window already cut, sends ``reconnect`` with its resume token and closes with 1012;
new streams are refused with 4503 meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anyio
import numpy as np
from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from sevensense.audio.live import LiveWindows, PcmDecoder, PcmFormat
from sevensense.audio.windowing import SkippedWindow, Window
from sevensense.errors import (
    DrainingError,
    PayloadTooLargeError,
    RequestError,
    ResumeRefusedError,
    SevensenseError,
    SlowReaderError,
    StreamProtocolError,
    UploadTooSlowError,
)
from sevensense.identity import ApiKeyRecord
from sevensense.inference.engine import WindowResult
from sevensense.outputs.response import window_json
from sevensense.serving.access.admission import admit, anonymous
from sevensense.serving.access.keys import API_KEY_HEADER, KeyStore, key_from_headers
from sevensense.serving.access.ratelimit import RateLimiter
from sevensense.serving.dispatch.gateway import Gateway
from sevensense.serving.stream.birdnet_check import CrossChecks, StreamVerifier
from sevensense.serving.stream.protocol import (
    NORMAL_CLOSE,
    RESTART_CLOSE,
    ClientMessage,
    StreamEnd,
    StreamError,
    StreamLimits,
    StreamOpen,
    StreamReady,
    StreamReconnect,
    StreamSkipped,
    StreamSummary,
    StreamThrottle,
    StreamWindow,
    close_code,
)
from sevensense.serving.stream.resume import ResumeTokens, check_same_request
from sevensense.serving.stream.sessions import (
    StreamRegistry,
    StreamSession,
    check_resume,
    new_stream_id,
    rebuild,
    speed_wait,
    unknown_stream,
)
from sevensense.serving.telemetry.metrics import metrics
from sevensense.serving.tenant_index import SimilarityService, key_scope
from sevensense.settings import Settings
from sevensense.verification.agreement import RequestVerification

log = logging.getLogger(__name__)

Parts = Callable[[], tuple[Gateway, KeyStore, RateLimiter]]
TASK = f"{socket.gethostname()}:{os.getpid()}"


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


def _percentile(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values.size else None


@dataclasses.dataclass
class _Pending:
    windows: list[Window]
    ready_at: float
    task: asyncio.Task[list[tuple[WindowResult, str, float | None, bytes | None]]]


class StreamEndpoint:
    """The per-worker stream registry and what every connection needs."""

    def __init__(self, settings: Settings, parts: Parts, similarity: SimilarityService) -> None:
        self.settings = settings
        self.limits = settings.serving.stream
        self.parts = parts
        self.similarity = similarity
        self.registry = StreamRegistry(self.limits)
        self.tokens = ResumeTokens(self.limits.resume_secret, self.limits.resume_token_ttl_s)
        self.connections: set[_Connection] = set()
        self.draining = False

    async def drain(self, timeout_s: float) -> int:
        """Hand every open stream a resume point and close it (1012); refuse new ones.
        Returns the streams handed off."""
        self.draining = True
        live = [c for c in self.connections if c.session is not None]
        for c in live:
            c.hand_off.set()
        tasks = [c.task for c in live if c.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)
        return len(live)

    def publish(self) -> None:
        gauge = metrics().streams_open
        gauge.labels("attached").set(self.registry.open_count())
        gauge.labels("detached").set(self.registry.detached_count)

    async def __call__(self, ws: WebSocket) -> None:
        await ws.accept()
        await _Connection(self, ws).run()


class _Connection:
    def __init__(self, endpoint: StreamEndpoint, ws: WebSocket) -> None:
        self.endpoint = endpoint
        self.limits = endpoint.limits
        self.ws = ws
        self.session: StreamSession | None = None
        self.number = 0
        self.key: ApiKeyRecord | None = None
        self.send_lock = asyncio.Lock()
        self.outbox: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self.inflight: list[_Pending] = []
        self.pending_windows = 0
        self.drained = asyncio.Event()
        self.drained.set()
        self.last_throttle = 0.0
        self.checks: CrossChecks | None = None  # with verify=true, once attached
        self.hand_off = asyncio.Event()  # the task is stopping: see StreamEndpoint.drain
        self.task: asyncio.Task[Any] | None = None

    # --- life cycle ------------------------------------------------------------------------

    async def run(self) -> None:
        reason = "dropped"
        self.task = asyncio.current_task()
        self.endpoint.connections.add(self)
        try:
            if self.endpoint.draining:
                raise DrainingError("this server is stopping; open the stream again", 1.0)
            opened = await self._opening()
            self.key = self._authenticate(opened)
            await self._attach(opened, self.key)
            reason = "end" if await self._pump() else "drained"
        except WebSocketDisconnect:
            reason = "dropped"
        except asyncio.CancelledError:
            if self.session is not None and self.session.taken_over:  # see _attach
                reason = "superseded"
                await self._fail("superseded", "a newer connection resumed this stream", 4409)
            else:
                reason = "shutdown"
                await self._fail("shutdown", "the server is stopping; resume the stream", 1001)
            raise
        except SevensenseError as exc:
            reason = exc.code
            await self._fail(exc.code, exc.message, close_code(exc), exc.details)
        except Exception:
            reason = "internal_error"
            log.exception("stream %s: unexpected error", self._sid())
            await self._fail("internal_error", "unexpected error; the server log has it", 1011)
        finally:
            self.endpoint.connections.discard(self)
            await self._cancel_inflight()
            await self._release(reason)
            metrics().stream_closes.labels(reason).inc()
            self.endpoint.publish()

    def _sid(self) -> str:
        return self.session.stream_id if self.session else "-"

    async def _opening(self) -> StreamOpen:
        try:
            async with asyncio.timeout(self.limits.open_timeout_s):
                message = await self.ws.receive()
        except TimeoutError:
            raise UploadTooSlowError(
                f"no opening message within {self.limits.open_timeout_s:g} s"
            ) from None
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        text = message.get("text")
        if text is None:
            raise StreamProtocolError(
                'the first message must be the JSON "open" message, not audio'
            )
        try:
            parsed = ClientMessage.validate_json(text)
        except ValidationError as exc:
            raise RequestError(f"invalid opening message: {_problems(exc)}") from None
        if not isinstance(parsed, StreamOpen):
            raise StreamProtocolError('the first message must be "open"')
        return parsed

    def _authenticate(self, opened: StreamOpen) -> ApiKeyRecord:
        serving = self.endpoint.settings.serving
        if not serving.auth_required:
            return anonymous("embed")
        _, keys, limiter = self.endpoint.parts()
        headers = self.ws.headers
        presented = opened.api_key or key_from_headers(
            headers.get("authorization"), headers.get(API_KEY_HEADER)
        )
        return admit(keys, limiter, presented, "embed")

    async def _attach(self, opened: StreamOpen, key: ApiKeyRecord) -> None:
        endpoint = self.endpoint
        registry = endpoint.registry
        gateway, _, _ = endpoint.parts()
        found = registry.find(key.id, opened.stream_id) if opened.stream_id else None
        claimed = -1 if opened.last_window is None else opened.last_window
        if found is not None and claimed > found.last_sent:
            # The client has results this worker never sent: another task continued the
            # stream since it was dropped here, so the copy held here is stale.
            if found.task is not None and not found.task.done():
                found.taken_over = True
                found.task.cancel()
                await asyncio.wait({found.task}, timeout=5.0)
            registry.close(found)
            found = None
        replay: list[str] = []
        verification = None
        rebuilt = False
        if found is None and opened.resuming:
            session, verification = await self._rebuild(opened, key, gateway)
            rebuilt = True
        elif found is not None:
            check_resume(opened, found)
            if found.attached and found.task is not None and not found.task.done():
                # The field's usual case: the old connection died and the server has not
                # noticed yet. Stop it first; its unanswered windows stay with the stream.
                found.taken_over = True
                found.task.cancel()
                await asyncio.wait({found.task}, timeout=5.0)
            if not found.attached:
                registry.check_capacity(key.id)
            replay = found.replay_after(opened.last_window)
            replay += found.verifications_after(opened.last_verified)
            found.resume_audio(opened.resume_from)
            found.resumes += 1
            metrics().stream_resumes.labels("held").inc()
            session = found
        else:
            registry.check_capacity(key.id)
            plan = await gateway.prepare(
                opened.for_tenant(key_scope(key).tenant), opened.stream_id or key.id
            )
            fmt = PcmFormat(opened.sample_rate, opened.channels, opened.encoding)
            session = StreamSession(
                stream_id=opened.stream_id or new_stream_id(),
                owner=key.id,
                opened=opened,
                plan=plan,
                decoder=PcmDecoder(fmt),
                live=LiveWindows(opened.sample_rate, plan.config),
                replay_size=self.limits.replay_windows,
            )
            if opened.verify:
                vplan = gateway.verifier.plan(plan.artifact, True)
                if vplan is not None and vplan.active and vplan.config is not None:
                    manifest = plan.manifest
                    session.verify = StreamVerifier(
                        vplan,
                        LiveWindows(opened.sample_rate, vplan.config),
                        plan.window_s,
                        (manifest.name, manifest.version),
                    )
                elif vplan is not None:
                    verification = vplan.answer
        self.session = session
        if session.verify is not None:
            self.checks = CrossChecks(
                gateway.verifier, self._send, self.drained.set, session.keep_verification
            )
        self.number = registry.attach(session)
        session.task = asyncio.current_task()
        session.taken_over = False
        endpoint.publish()
        manifest = session.plan.manifest
        ready = StreamReady(
            stream_id=session.stream_id,
            resumed=found is not None or rebuilt,
            rebuilt=rebuilt,
            resume_token=self._token(session),
            task=TASK,
            received_frames=session.decoder.frames,
            replayed=len(replay),
            model=manifest.identity,
            sample_rate=manifest.sample_rate,
            window_s=session.plan.window_s,
            hop_s=session.plan.hop_s,
            embedding_dim=session.plan.transform.out_dim(manifest.embedding_dim),
            limits=StreamLimits.model_validate(
                self.limits.model_dump(include=set(StreamLimits.model_fields))
            ),
            verification=verification,
        )
        await self._send(ready.model_dump_json(exclude_none=True))
        for message in replay:
            await self._send(message)
        if found is not None and session.verify is not None:
            session.verify.sent_next = max(session.verify.sent_next, session.verify.produced_next)

    async def _rebuild(
        self, opened: StreamOpen, key: ApiKeyRecord, gateway: Gateway
    ) -> tuple[StreamSession, RequestVerification | None]:
        """A resume this worker does not hold: from the client's token and audio (and the
        verification answer when verify=true has nothing to compute here)."""
        stream_id = opened.stream_id or ""
        if opened.resume_token is None:
            raise unknown_stream(stream_id)
        state = self.endpoint.tokens.check(opened.resume_token, key.id, stream_id)
        check_same_request(opened, state)
        self.endpoint.registry.check_capacity(key.id)
        pinned = opened.model_copy(update={"model": state.model})
        try:
            plan = await gateway.prepare(pinned, stream_id)
        except SevensenseError as exc:
            raise ResumeRefusedError(
                f"stream {stream_id} runs {state.model}, which this task cannot serve "
                f"({exc.code}: {exc.message}); open a new stream",
                reason="model_version",
                model=state.model,
            ) from None
        vplan = gateway.verifier.plan(plan.artifact, True) if opened.verify else None
        active = vplan if vplan is not None and vplan.active else None
        session = rebuild(state, opened, plan, self.limits.replay_windows, active)
        session.resume_audio(opened.resume_from)
        session.resumes += 1
        metrics().stream_resumes.labels("rebuilt").inc()
        return session, vplan.answer if vplan is not None and active is None else None

    def _token(self, session: StreamSession) -> str:
        return self.endpoint.tokens.sign(session.state(time.time()))

    async def _release(self, reason: str) -> None:
        session = self.session
        if session is None:
            return
        registry = self.endpoint.registry
        if session.connection != self.number:
            return  # a newer connection took the stream over
        with contextlib.suppress(Exception):
            await self._flush_index(session)
        if reason == "end":
            registry.close(session)
        else:
            registry.detach(session, self.number)

    # --- the two loops ---------------------------------------------------------------------

    async def _pump(self) -> bool:
        """True once the stream ended; False when it was handed off (the task stops)."""
        session = self.session
        assert session is not None
        sender = asyncio.create_task(self._sender(session))
        reader = asyncio.create_task(self._reader(session))
        stopping = asyncio.create_task(self.hand_off.wait())
        try:
            done, _ = await asyncio.wait(
                {sender, reader, stopping}, return_when=asyncio.FIRST_COMPLETED
            )
            if reader in done:
                reader.result()  # raises what stopped it
                await self.outbox.put(None)
                await sender
            elif stopping in done:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                await self.outbox.put(None)
                await sender  # every window cut so far is answered first
                await self._handed_off(session)
                return False
            else:
                sender.result()
                raise RuntimeError("the sender stopped before the reader")
        finally:
            for task in (reader, sender, stopping):
                task.cancel()
            await asyncio.gather(reader, sender, stopping, return_exceptions=True)
        await self._finish(session)
        return True

    async def _handed_off(self, session: StreamSession) -> None:
        notice = StreamReconnect(
            stream_id=session.stream_id,
            reason="draining",
            last_window=session.last_sent,
            resume_token=self._token(session),
        )
        await self._send(notice.model_dump_json())
        await self.ws.close(RESTART_CLOSE, reason="draining: resume the stream")

    async def _reader(self, session: StreamSession) -> None:
        if session.unanswered:  # cut before a drop, never answered: first, in order
            self._dispatch(list(session.unanswered), time.monotonic())
        if session.verify is not None and session.verify.unanswered:
            self._verify_dispatch(list(session.verify.unanswered))
        started = time.monotonic()
        received = 0  # samples on this connection, for the speed bound
        rate = session.format.sample_rate
        while True:
            message = await self._receive(self.limits.idle_timeout_s)
            data = message.get("bytes")
            if data is None:
                if self._control(message.get("text") or "") is StreamEnd:
                    break
                continue
            if len(data) > self.limits.max_frame_bytes:
                raise PayloadTooLargeError(
                    f"a {len(data)}-byte frame; the limit is {self.limits.max_frame_bytes}",
                    limit_bytes=self.limits.max_frame_bytes,
                )
            session.frames += 1
            session.received_bytes += len(data)
            m = metrics()
            m.stream_frames.inc()
            m.stream_bytes.inc(len(data))
            before = session.decoder.frames
            mono = session.decoder.decode(session.take_skip(data))
            received += session.decoder.frames - before
            kept, skipped = session.live.push(mono)
            if session.verify is not None:
                self._verify_dispatch(session.verify.cut(mono))
            await self._cut(session, kept, skipped)
            wait = speed_wait(
                received / rate,
                time.monotonic() - started,
                self.limits.max_speed,
                self.limits.burst_s,
            )
            if wait > 0.0:
                await self._throttle(session, wait)
        kept, skipped = session.live.finish()
        if session.verify is not None:
            self._verify_dispatch(session.verify.finish())
        await self._cut(session, kept, skipped)
        await self._after_end()

    async def _after_end(self) -> None:
        """Nothing may follow ``end``: a frame that does is refused, not silently dropped."""
        answered = asyncio.create_task(self._all_answered())
        extra = asyncio.create_task(self.ws.receive())
        done, _ = await asyncio.wait({answered, extra}, return_when=asyncio.FIRST_COMPLETED)
        if extra in done and not extra.exception():
            message = extra.result()
            answered.cancel()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            raise StreamProtocolError("a message after end: the stream was already finished")
        extra.cancel()
        await asyncio.gather(extra, return_exceptions=True)

    async def _all_answered(self) -> None:
        while self.pending_windows:
            self.drained.clear()
            await self.drained.wait()
        session = self.session
        if session is not None and self.checks is not None:
            await self.checks.drain(session.stream_id, session.verify)

    async def _receive(self, timeout: float) -> dict[str, Any]:
        try:
            async with asyncio.timeout(timeout):  # per frame: no extra task, unlike wait_for
                message = await self.ws.receive()
        except TimeoutError:
            raise UploadTooSlowError(
                f"no audio for {timeout:g} s; the stream is kept for a resume",
                idle_timeout_s=timeout,
            ) from None
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        return dict(message)

    def _control(self, text: str) -> type[StreamEnd] | None:
        try:
            parsed = ClientMessage.validate_json(text)
        except ValidationError as exc:
            raise StreamProtocolError(f"invalid control message: {_problems(exc)}") from None
        if isinstance(parsed, StreamEnd):
            return StreamEnd
        raise StreamProtocolError('"open" only once, as the first message')

    async def _throttle(self, session: StreamSession, wait: float) -> None:
        """One notice (and one count) per episode, however many frames it spans."""
        now = time.monotonic()
        if now - self.last_throttle >= 1.0:
            session.throttles += 1
            metrics().stream_throttles.inc()
            notice = StreamThrottle(
                ahead_s=round(wait * self.limits.max_speed, 3),
                wait_s=round(wait, 3),
                max_speed=self.limits.max_speed,
            )
            await self._send(notice.model_dump_json())
        self.last_throttle = now + wait
        await asyncio.sleep(wait)

    async def _cut(
        self, session: StreamSession, kept: list[Window], skipped: list[SkippedWindow]
    ) -> None:
        for s in skipped:
            if s.index < session.rederive_below:  # notified by the task before
                continue
            session.skipped += 1
            notice = StreamSkipped(
                stream_id=session.stream_id,
                index=s.index,
                start_s=round(s.start_s, 6),
                end_s=round(s.end_s, 6),
                reason=s.reason,
            )
            await self._send(notice.model_dump_json())
        if not kept:
            return
        session.unanswered.extend(kept)
        while self._waiting(session) >= self.limits.max_pending_windows:
            self.drained.clear()
            await self.drained.wait()
        self._dispatch(kept, time.monotonic())

    def _waiting(self, session: StreamSession) -> int:
        """Windows cut and not answered yet, the verifier's included (a slow verifier
        pauses reading too, instead of holding BirdNET windows without bound)."""
        verifying = len(session.verify.unanswered) if session.verify is not None else 0
        return self.pending_windows + verifying

    def _dispatch(self, windows: list[Window], ready_at: float) -> None:
        session = self.session
        assert session is not None
        gateway, _, _ = self.endpoint.parts()
        task = asyncio.create_task(
            gateway.embed_windows(
                session.plan, session.opened, windows, logits=session.verify is not None
            )
        )
        pending = _Pending(windows, ready_at, task)
        self.inflight.append(pending)
        self.pending_windows += len(windows)
        self.outbox.put_nowait(pending)

    async def _sender(self, session: StreamSession) -> None:
        manifest = session.plan.manifest
        opened = session.opened
        while True:
            pending = await self.outbox.get()
            if pending is None:
                return
            results = await pending.task
            self.inflight.remove(pending)
            answered = {id(w) for w in pending.windows}
            session.unanswered = [w for w in session.unanswered if id(w) not in answered]
            for window, (result, served, similarity, logits) in zip(
                pending.windows, results, strict=True
            ):
                if window.index < session.rederive_below:  # answered by the task before
                    if session.verify is not None:
                        session.verify.primary(
                            result.index, window.start_sample, result.start_s, result.end_s, logits
                        )
                    continue
                latency_ms = (time.monotonic() - pending.ready_at) * 1e3
                body = window_json(result, served, similarity, embedding=opened.include_embedding)
                start_at = end_at = None
                if opened.recorded_at is not None:
                    start_at = opened.recorded_at + timedelta(seconds=result.start_s)
                    end_at = opened.recorded_at + timedelta(seconds=result.end_s)
                session.windows += 1
                if opened.index and served != "zero_vector":  # counted before the token
                    session.to_index.append(result)  # adds are idempotent per window
                    session.indexed += 1
                session.next_index = window.index + 1
                session.last_sent = max(session.last_sent, window.start_sample)
                message = StreamWindow(
                    **body.model_dump(),
                    stream_id=session.stream_id,
                    start_sample=window.start_sample,
                    start_at=start_at,
                    end_at=end_at,
                    latency_ms=round(latency_ms, 2),
                    resume_token=self._token(session),
                ).model_dump_json(exclude_none=True)
                session.answered(window.start_sample, message)
                if session.verify is not None:  # before the send: a drop there loses none
                    session.verify.primary(
                        result.index, window.start_sample, result.start_s, result.end_s, logits
                    )
                await self._send(message)
                session.latencies_ms.append(latency_ms)
                m = metrics()
                m.stream_windows.labels(manifest.name).inc()
                m.stream_latency.observe(latency_ms / 1e3)
            self.pending_windows -= len(pending.windows)
            self.drained.set()
            await self._verify_flush()
            if len(session.to_index) >= self.limits.index_batch:
                await self._flush_index(session)

    async def _finish(self, session: StreamSession) -> None:
        await self._flush_index(session)
        latencies = np.asarray(session.latencies_ms, dtype=np.float64)
        summary = StreamSummary(
            stream_id=session.stream_id,
            model=session.plan.manifest.identity,
            windows=session.windows,
            skipped=session.skipped,
            duration_s=round(session.duration_s, 6),
            frames=session.frames,
            bytes=session.received_bytes,
            throttles=session.throttles,
            resumes=session.resumes,
            indexed=session.indexed if session.opened.index else None,
            latency_ms_p50=_percentile(latencies, 50),
            latency_ms_p99=_percentile(latencies, 99),
            verification=session.verify.summary() if session.verify is not None else None,
        )
        await self._send(summary.model_dump_json(exclude_none=True))
        await self.ws.close(NORMAL_CLOSE)

    # --- verify=true -----------------------------------------------------------------------

    def _verify_dispatch(self, windows: list[Window]) -> None:
        session = self.session
        assert session is not None and session.verify is not None and self.checks is not None
        self.checks.dispatch(session.stream_id, session.verify, windows)

    async def _verify_flush(self) -> None:
        session = self.session
        if session is not None and session.verify is not None and self.checks is not None:
            await self.checks.flush(session.stream_id, session.verify)

    # --- helpers ---------------------------------------------------------------------------

    async def _flush_index(self, session: StreamSession) -> None:
        if not session.to_index or self.key is None:
            return
        batch, session.to_index = session.to_index, []
        opened = session.opened
        await anyio.to_thread.run_sync(
            lambda: self.endpoint.similarity.add_results(
                session.plan.manifest,
                session.plan.transform,
                session.plan.hop_s,
                batch,
                tenant=session.owner,
                recording_id=session.stream_id,
                site=opened.site,
                time=opened.recorded_at,
            )
        )

    async def _send(self, text: str) -> None:
        timeout = self.limits.slow_reader_s
        async with self.send_lock:
            try:
                async with asyncio.timeout(timeout):
                    await self.ws.send_text(text)
            except TimeoutError:
                raise SlowReaderError(
                    f"the client took no result for {timeout:g} s; the stream is kept for a resume",
                    slow_reader_s=timeout,
                ) from None

    async def _fail(
        self, code: str, message: str, close: int, details: dict[str, Any] | None = None
    ) -> None:
        if self.ws.application_state is not WebSocketState.CONNECTED:
            return
        body = StreamError(
            code=code,
            message=message,
            close_code=close,
            details=json.loads(json.dumps(details, default=str)) if details else None,
        )
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self.ws.send_text(body.model_dump_json(exclude_none=True))
        reason = f"{code}: {message}".encode()[:120].decode(errors="ignore")
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):  # a client that reads nothing blocks the close too
                await self.ws.close(close, reason=reason)

    async def _cancel_inflight(self) -> None:
        tasks: list[asyncio.Task[Any]] = [p.task for p in self.inflight]
        if self.checks is not None:
            tasks.extend(self.checks.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.checks is not None:
            await self.checks.settle()
        self.inflight.clear()
