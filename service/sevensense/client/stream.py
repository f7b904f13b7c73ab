"""The reference client of ``WS /stream`` (``sevensense stream``), and the plain client the
README shows: a file in real time (or ``speed`` × faster) or raw PCM from stdin, results as
they arrive, and a resume after every dropped connection.

Resumption: the client keeps the audio it sent, the start sample of the last window it
received and that window's ``resume_token`` (or ``ready``'s, while no window came after
it). On a reconnect it opens with the same ``stream_id``, ``last_window``, ``last_verified``
and the token; the entry task it reaches (any of them) answers with the sample to send from
(``received_frames``), resends what it holds that the client missed, and the client sends
audio again from that offset. A file is re-read from the offset; stdin audio comes from the
client's resend buffer (``resend_s`` seconds). A ``reconnect`` message (the task is
stopping) is a resume at once, without the back-off.

verify=true: a task that rebuilds the stream may ask for audio from before the next window
(``received_frames`` reaches back to the oldest window whose verification the client may
lack, plus the BirdNET windows pooled into it); the client sends from there as always, so
the resend buffer must hold that much (at most ``max_pending_windows`` windows back).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import soundfile as sf
from httpx_ws import AsyncWebSocketSession, HTTPXWSException, WebSocketDisconnect, aconnect_ws
from pydantic import ValidationError

from sevensense.audio.encoding import SampleEncoding
from sevensense.errors import SevensenseError
from sevensense.serving.stream.protocol import RESTART_CLOSE, StreamReady, StreamSummary

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 << 20
# Worth a reconnect: the link dropped (1006 and network errors), the server restarted
# (1001, 1012), was overloaded (4503, 4429), or timed the client out (4408).
RETRYABLE_CLOSES = {1001, 1006, 1011, 1012, 1013, 4408, 4429, 4503}


class StreamClientError(SevensenseError):
    """The server refused or ended the stream with an error that a retry would not fix."""

    code = "stream_failed"

    def __init__(self, message: str, close_code: int | None = None, **details: Any) -> None:
        super().__init__(message, close_code=close_code, **details)
        self.close_code = close_code


class PcmSource:
    """Audio as PCM frames from any sample offset (per channel)."""

    format: tuple[int, int, SampleEncoding]  # rate, channels, encoding

    def frames_from(self, offset: int, frame_samples: int) -> Iterator[bytes]:
        raise NotImplementedError


class FileSource(PcmSource):
    """A recording decoded by soundfile: int16 for 16-bit PCM files, else float32, so the
    server sees exactly the samples a file upload would give."""

    def __init__(self, path: Path) -> None:
        self.path = path
        info = sf.info(str(path))
        encoding = SampleEncoding.S16LE if info.subtype == "PCM_16" else SampleEncoding.F32LE
        self.format = (info.samplerate, info.channels, encoding)

    def frames_from(self, offset: int, frame_samples: int) -> Iterator[bytes]:
        dtype = "int16" if self.format[2] is SampleEncoding.S16LE else "float32"
        with sf.SoundFile(str(self.path)) as f:
            f.seek(offset)
            while True:
                block = f.read(frame_samples, dtype=dtype, always_2d=True)
                if block.shape[0] == 0:
                    return
                yield block.astype("<i2" if dtype == "int16" else "<f4").tobytes()


@dataclass
class RawSource(PcmSource):
    """Raw interleaved PCM from a pipe (``arecord -t raw``); the last ``resend_s`` seconds
    are kept to send again after a drop."""

    stream: BinaryIO
    rate: int
    channels: int
    encoding: SampleEncoding
    resend_s: float = 120.0
    _kept: deque[tuple[int, bytes]] = field(default_factory=deque)
    _read: int = 0  # samples read from the pipe
    _eof: bool = False

    def __post_init__(self) -> None:
        self.format = (self.rate, self.channels, self.encoding)

    @property
    def frame_bytes(self) -> int:
        width = 2 if self.encoding is SampleEncoding.S16LE else 4
        return width * self.channels

    def frames_from(self, offset: int, frame_samples: int) -> Iterator[bytes]:
        fb = self.frame_bytes
        if offset < self._read:  # what the server lost, from memory
            oldest = self._kept[0][0] if self._kept else self._read
            if offset < oldest:
                raise StreamClientError(
                    f"the server needs audio from sample {offset}, older than the "
                    f"{self.resend_s:g} s this client keeps"
                )
            for start, data in list(self._kept):
                end = start + len(data) // fb
                if end > offset:
                    yield data[max(0, offset - start) * fb :]
                    offset = end
        while not self._eof:
            data = self.stream.read(frame_samples * self.frame_bytes)
            if not data:
                self._eof = True
                return
            start = self._read
            self._read += len(data) // self.frame_bytes
            self._kept.append((start, data))
            while self._kept and self._kept[0][0] < self._read - self.resend_s * self.rate:
                self._kept.popleft()
            yield data


@dataclass
class StreamRun:
    """What the client saw: every window once (keyed by start sample), and the summary."""

    windows: dict[int, dict[str, Any]] = field(default_factory=dict)
    duplicates: int = 0
    throttles: int = 0
    reconnects: int = 0
    summary: StreamSummary | None = None
    stream_id: str | None = None
    last_window: int = -1  # the latest start_sample received
    token: str | None = None  # the resume token that came with it
    last_verified: int = -1
    verifications: int = 0
    verified: set[int] = field(default_factory=set)  # start samples, to see duplicates
    verification_duplicates: int = 0
    readies: list[StreamReady] = field(default_factory=list)  # one per connection
    handed_off: int = 0  # reconnect messages (the task was stopping)


async def stream_audio(
    url: str,
    source: PcmSource,
    options: dict[str, Any],
    *,
    api_key: str | None = None,
    speed: float | None = 1.0,
    frame_ms: float = 100.0,
    retries: int = 5,
    on_message: Callable[[dict[str, Any]], None] | None = None,
) -> StreamRun:
    """Stream ``source`` to ``url`` (ws://host:port/stream), resuming after drops.

    ``speed``: × real time (None: as fast as the server reads). ``options``: the opening
    message's fields beyond the audio format (model, top_k, lat/lon, ...)."""
    rate, channels, encoding = source.format
    frame_samples = max(1, round(rate * frame_ms / 1000))
    run = StreamRun(stream_id=options.get("stream_id"))
    headers = {"X-API-Key": api_key} if api_key else {}
    failures = 0
    opened = False  # the server has answered ``ready`` once: the stream exists there
    origin = time.monotonic()  # when sample 0 was "recorded", for the pacing
    while True:
        opening: dict[str, Any] = {
            **options,
            "type": "open",
            "sample_rate": rate,
            "channels": channels,
            "encoding": str(encoding),
        }
        if run.stream_id is not None:
            opening["stream_id"] = run.stream_id
        if opened:  # a resume: -1 when no result arrived, so the server resends all it
            # holds (a result sent into the dropped socket would otherwise be lost)
            opening["last_window"] = run.last_window
            opening["last_verified"] = run.last_verified
            if run.token is not None:
                opening["resume_token"] = run.token
        ws: AsyncWebSocketSession
        windows_before = len(run.windows)
        try:
            async with (
                httpx.AsyncClient(headers=headers, timeout=30.0) as client,
                aconnect_ws(url, client, max_message_size_bytes=MAX_MESSAGE_BYTES) as ws,
            ):
                await ws.send_text(json.dumps(opening))
                ready = StreamReady.model_validate_json(_first(await ws.receive_text()))
                if on_message is not None:
                    on_message(json.loads(ready.model_dump_json()))
                run.stream_id = ready.stream_id
                run.readies.append(ready)
                if ready.replayed == 0:  # else the replayed windows bring their tokens
                    run.token = ready.resume_token
                opened = True
                frames = source.frames_from(ready.received_frames, frame_samples)
                sender = asyncio.create_task(
                    _send(ws, frames, rate, speed, frame_samples, origin, ready.received_frames)
                )
                try:
                    if await _receive(ws, run, on_message):
                        return run
                finally:
                    sender.cancel()
                    await asyncio.gather(sender, return_exceptions=True)
        except BaseException as raised:
            exc = _leaf(raised)
            if isinstance(exc, WebSocketDisconnect):
                if exc.code not in RETRYABLE_CLOSES:
                    raise StreamClientError(
                        f"the server closed the stream: {exc.code} {exc.reason}", exc.code
                    ) from None
                reason = f"{exc.code} {exc.reason}"
            elif isinstance(exc, HTTPXWSException | httpx.TransportError | OSError):
                reason = f"{type(exc).__name__}: {exc}"
            elif exc is not raised:
                raise exc from None
            else:
                raise
        if len(run.windows) > windows_before:
            failures = 0  # retries counts reconnects in a row without progress
        handed_off = reason.startswith(f"{RESTART_CLOSE} ")
        failures += 0 if handed_off else 1
        if failures > retries:
            raise StreamClientError(f"gave up after {retries} reconnects; last: {reason}")
        run.reconnects += 1
        log.warning("stream %s dropped (%s); resuming", run.stream_id, reason)
        if not handed_off:
            await asyncio.sleep(min(10.0, 0.2 * 2**failures))


def _leaf(exc: BaseException) -> BaseException:
    """httpx-ws runs its reader in a task group, which wraps what it raises."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _first(text: str) -> str:
    """The server's first answer is ``ready``, or an error (then the close follows)."""
    body = json.loads(text)
    if body.get("type") == "error":
        if body.get("close_code") in RETRYABLE_CLOSES:
            raise WebSocketDisconnect(body["close_code"], body.get("message", ""))
        raise StreamClientError(
            f"{body['code']}: {body['message']}", body.get("close_code"), code=body["code"]
        )
    return text


async def _send(
    ws: Any,
    frames: Iterator[bytes],
    rate: int,
    speed: float | None,
    frame_samples: int,
    origin: float,
    offset: int,
) -> None:
    """Paced on the stream's own clock: after a resume, the audio recorded meanwhile (the
    backlog a sensor buffers) goes at once, then the pace of ``speed`` again."""
    started = origin
    sent_s = offset / rate
    for frame in frames:
        if speed is not None:
            delay = started + sent_s / speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await ws.send_bytes(frame)
        sent_s += frame_samples / rate
    await ws.send_text(json.dumps({"type": "end"}))


async def _receive(
    ws: Any, run: StreamRun, on_message: Callable[[dict[str, Any]], None] | None
) -> bool:
    """True once the summary came (the stream is finished)."""
    while True:
        body = json.loads(await ws.receive_text())
        kind = body.get("type")
        if on_message is not None:
            on_message(body)
        if kind == "window":
            start = int(body["start_sample"])
            if start in run.windows:
                run.duplicates += 1
            if start >= run.last_window:
                run.last_window = start
                run.token = body.get("resume_token", run.token)
            run.windows[start] = body
        elif kind == "verification":
            run.verifications += 1
            start = int(body["start_sample"])
            run.verification_duplicates += start in run.verified
            run.verified.add(start)
            run.last_verified = max(run.last_verified, int(body["start_sample"]))
        elif kind == "reconnect":
            run.handed_off += 1
            run.token = body["resume_token"]
            raise WebSocketDisconnect(RESTART_CLOSE, body.get("reason", "draining"))
        elif kind == "throttle":
            run.throttles += 1
        elif kind == "summary":
            try:
                run.summary = StreamSummary.model_validate(body)
            except ValidationError as exc:
                raise StreamClientError(f"unreadable summary: {exc}") from None
            return True
        elif kind == "error":
            code = body.get("close_code")
            if code in RETRYABLE_CLOSES:
                raise WebSocketDisconnect(code, body.get("message", ""))
            raise StreamClientError(f"{body['code']}: {body['message']}", code, code=body["code"])


def stdin_source(rate: int, channels: int, encoding: SampleEncoding) -> RawSource:
    return RawSource(sys.stdin.buffer, rate, channels, encoding)
