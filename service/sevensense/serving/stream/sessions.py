"""Live streams' state, apart from the socket that carries them, so that a stream outlives a
dropped connection.

What the server keeps per stream, and for how long: the decoder (with any partial sample),
the resampler and windower state (at most one window of samples), the windows cut but not
yet answered, the last ``replay_windows`` answers, and counters. A stream whose connection
drops is *detached* and kept ``resume_ttl_s`` (and at most ``max_detached`` of them per
gateway worker, oldest let go first); a reconnect with its ``stream_id`` under the same key
attaches to it again. A resume that reaches a worker that does not hold the stream (another
entry task, or this one after a restart) rebuilds it from the client's resume token and
audio instead (:mod:`.resume`, :func:`rebuild`).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from fractions import Fraction

from sevensense.audio.live import LiveWindows, PcmDecoder, PcmFormat, resume_point
from sevensense.audio.pipeline import PreprocessConfig
from sevensense.audio.windowing import Window
from sevensense.errors import (
    RequestError,
    StreamNotFoundError,
    StreamResumeError,
    TooManyStreamsError,
)
from sevensense.inference.engine import WindowResult
from sevensense.planning.plan import RequestPlan
from sevensense.serving.dispatch.birdnet_check import Plan as VerifierPlan
from sevensense.serving.stream.birdnet_check import StreamVerifier
from sevensense.serving.stream.protocol import StreamOpen
from sevensense.serving.stream.resume import ResumeState, Tally, options_digest
from sevensense.settings import StreamSettings


def speed_wait(audio_s: float, elapsed_s: float, max_speed: float, burst_s: float) -> float:
    """Seconds to stop reading so that the audio received on a connection stays within
    ``burst_s + max_speed × elapsed``; 0 when it does."""
    return max(0.0, (audio_s - burst_s) / max_speed - elapsed_s)


@dataclass
class StreamSession:
    stream_id: str
    owner: str
    opened: StreamOpen
    plan: RequestPlan
    decoder: PcmDecoder
    live: LiveWindows
    replay_size: int
    unanswered: list[Window] = field(default_factory=list)
    replay: deque[tuple[int, str]] = field(default_factory=deque)
    replay_evicted: int = -1  # highest start_sample no longer held for a resume
    last_sent: int = -1
    next_index: int = 0  # the window after the last one answered, for a resume token
    rederive_below: int = 0  # rebuilt verify=true: windows before it were answered already
    verified: deque[tuple[int, str]] = field(default_factory=deque)  # verify=true, as replay
    connection: int = 0
    attached: bool = False
    detached_at: float = 0.0
    ended: bool = False
    skip_bytes: int = 0
    windows: int = 0
    skipped: int = 0
    frames: int = 0
    received_bytes: int = 0
    throttles: int = 0
    resumes: int = 0
    indexed: int = 0
    to_index: list[WindowResult] = field(default_factory=list)
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=4096))
    task: asyncio.Task[None] | None = None  # the connection serving it
    taken_over: bool = False  # a reconnect is cancelling that connection
    verify: StreamVerifier | None = None

    @property
    def format(self) -> PcmFormat:
        return self.decoder.format

    @property
    def duration_s(self) -> float:
        return self.decoder.frames / self.format.sample_rate

    def answered(self, start_sample: int, message: str) -> None:
        """Keep a result for a resume before it is sent: a send cut by a drop loses nothing."""
        self.replay.append((start_sample, message))
        while len(self.replay) > self.replay_size:
            evicted, _ = self.replay.popleft()
            self.replay_evicted = max(self.replay_evicted, evicted)
        self.last_sent = max(self.last_sent, start_sample)

    def keep_verification(self, start_sample: int, message: str) -> None:
        self.verified.append((start_sample, message))
        while len(self.verified) > self.replay_size:
            self.verified.popleft()

    def verifications_after(self, last_verified: int | None) -> list[str]:
        """verify=true: the verifications after the client's last one that are still held
        (a client that names none gets none again, as before verifications were kept)."""
        if last_verified is None:
            return []
        return [m for start, m in self.verified if start > last_verified]

    def state(self, now: float) -> ResumeState:
        """The resume token's content: what a task that never saw the stream needs."""
        fmt = self.format
        return ResumeState(
            sid=self.stream_id,
            key=self.owner,
            rate=fmt.sample_rate,
            ch=fmt.channels,
            enc=str(fmt.encoding),
            opts=options_digest(self.opened),
            model=str(self.plan.manifest.identity),
            asked=self.opened.model,
            next=self.next_index,
            last=self.last_sent,
            n=self.windows,
            sk=self.skipped,
            r=self.resumes,
            f=self.frames,
            b=self.received_bytes,
            t=self.throttles,
            ix=self.indexed,
            vp=self.verify.produced_next if self.verify is not None else None,
            vq=self.verify.sent_next if self.verify is not None else None,
            vt=self.verify.tally.model_copy(deep=True) if self.verify is not None else None,
            at=now,
        )

    def replay_after(self, last_window: int | None) -> list[str]:
        """Results after the client's last one; refuses a resume that would miss some."""
        if last_window is None or last_window >= self.last_sent:
            return []
        if last_window < self.replay_evicted:
            raise StreamResumeError(
                f"results after start_sample {last_window} are no longer held (the server "
                f"keeps the last {self.replay_size}); resume from a later window or start a "
                "new stream",
                last_window=last_window,
                oldest_held=self.replay[0][0] if self.replay else None,
            )
        return [m for start, m in self.replay if start > last_window]

    def resume_audio(self, resume_from: int | None) -> None:
        """Skip what the server already has of the audio the client sends again."""
        self.decoder.drop_partial()
        have = self.decoder.frames
        start = have if resume_from is None else resume_from
        if start > have:
            raise StreamResumeError(
                f"resume_from {start} is past the {have} samples received: the audio between "
                "would be missing",
                resume_from=start,
                received_frames=have,
            )
        self.skip_bytes = (have - start) * self.format.frame_bytes

    def take_skip(self, data: bytes) -> bytes:
        if self.skip_bytes <= 0:
            return data
        cut = min(self.skip_bytes, len(data))
        self.skip_bytes -= cut
        return data[cut:]


class StreamRegistry:
    """Open and dropped streams of one gateway worker, per key; one key never sees another's."""

    def __init__(self, settings: StreamSettings) -> None:
        self.settings = settings
        self._streams: dict[tuple[str, str], StreamSession] = {}
        self._detached: OrderedDict[tuple[str, str], float] = OrderedDict()

    def open_count(self, owner: str | None = None) -> int:
        return sum(1 for (o, _), s in self._streams.items() if s.attached and owner in (None, o))

    @property
    def detached_count(self) -> int:
        return len(self._detached)

    def reap(self, now: float | None = None) -> list[StreamSession]:
        """Drop detached streams past their time to live, and the oldest over the bound."""
        now = time.monotonic() if now is None else now
        gone = []
        for key, since in list(self._detached.items()):
            expired = now - since > self.settings.resume_ttl_s
            if expired or len(self._detached) > self.settings.max_detached:
                del self._detached[key]
                gone.append(self._streams.pop(key))
        return gone

    def find(self, owner: str, stream_id: str) -> StreamSession | None:
        self.reap()
        return self._streams.get((owner, stream_id))

    def check_capacity(self, owner: str) -> None:
        limits = self.settings
        if self.open_count(owner) >= limits.max_per_key:
            raise TooManyStreamsError(
                f"this key has {limits.max_per_key} streams open, the most allowed",
                retry_after_s=5.0,
                limit=limits.max_per_key,
            )
        if self.open_count() >= limits.max_total:
            raise TooManyStreamsError(
                f"{limits.max_total} streams are open on this worker, the most allowed",
                retry_after_s=5.0,
                limit=limits.max_total,
            )

    def attach(self, session: StreamSession) -> int:
        """Mark attached to a new connection; returns its number (an older one sees it
        changed and stops)."""
        key = (session.owner, session.stream_id)
        self._detached.pop(key, None)
        self._streams[key] = session
        session.attached = True
        session.connection += 1
        return session.connection

    def detach(self, session: StreamSession, connection: int) -> None:
        if session.connection != connection or not session.attached:
            return  # a newer connection owns it
        session.attached = False
        key = (session.owner, session.stream_id)
        if session.ended or self.settings.resume_ttl_s == 0 or self.settings.max_detached == 0:
            self._streams.pop(key, None)
            return
        session.detached_at = time.monotonic()
        self._detached[key] = session.detached_at
        self.reap()

    def close(self, session: StreamSession) -> None:
        session.ended = True
        session.attached = False
        key = (session.owner, session.stream_id)
        self._detached.pop(key, None)
        if self._streams.get(key) is session:
            del self._streams[key]


def rebuild(
    state: ResumeState,
    opened: StreamOpen,
    plan: RequestPlan,
    replay_size: int,
    verify: VerifierPlan | None = None,
) -> StreamSession:
    """A stream from its token, on a task that never held it: decoder, resampler and
    windower restarted at the resume point; the client sends the audio from there.

    With verify=true (``verify``: the verifier's plan here), the resume point goes back to
    the first window whose verification the client may lack: those windows are computed
    again for their verification alone (no second ``window`` message, no second count), and
    the BirdNET windows pooled into them are cut again from the same audio."""
    rate = opened.sample_rate
    hop = plan.config.window_spec().hop_samples
    redo, send_after, first_missing = state.next, -1, state.next
    if verify is not None and verify.config is not None:
        vp = state.next if state.vp is None else state.vp
        vq = vp if state.vq is None else state.vq
        send_after = max(-1 if opened.last_verified is None else opened.last_verified, vq * hop - 1)
        first_missing = send_after // hop + 1 if send_after >= 0 else 0
        redo = min(first_missing, vp, state.next)
    point = resume_point(rate, plan.config, redo)
    fed_from = point.input_offset
    vpoint = None
    if verify is not None and verify.config is not None:
        vpoint = resume_point(rate, verify.config, _first_pooled(plan, verify.config, redo))
        fed_from = min(fed_from, vpoint.input_offset)
    decoder = PcmDecoder(PcmFormat(rate, opened.channels, opened.encoding))
    decoder.frames = fed_from
    session = StreamSession(
        stream_id=state.sid,
        owner=state.key,
        opened=opened.model_copy(update={"model": state.asked}),
        plan=plan,
        decoder=decoder,
        live=LiveWindows.resumed(rate, plan.config, point, fed_from),
        replay_size=replay_size,
        replay_evicted=state.last,
        last_sent=state.last,
        next_index=state.next,
        rederive_below=state.next,
        windows=state.n,
        skipped=state.sk,
        frames=state.f,
        received_bytes=state.b,
        throttles=state.t,
        resumes=state.r,
        indexed=state.ix,
    )
    if verify is not None and verify.config is not None and vpoint is not None:
        manifest = plan.manifest
        vp = state.next if state.vp is None else state.vp
        session.verify = StreamVerifier(
            verify,
            LiveWindows.resumed(rate, verify.config, vpoint, fed_from),
            plan.window_s,
            (manifest.name, manifest.version),
            tally=(state.vt or Tally()).model_copy(deep=True),
            produced_next=vp,
            sent_next=first_missing,
            tally_from=vp,
            send_after=send_after,
        )
    return session


def _first_pooled(plan: RequestPlan, verifier: PreprocessConfig, index: int) -> int:
    """The first verifier window whose centre lies at or after primary window ``index``'s
    start: the first one pooled into it (exact, in rationals: both are whole samples)."""
    start = Fraction(index * plan.config.window_spec().hop_samples, plan.config.sample_rate)
    spec = verifier.window_spec()
    centre_from = start * verifier.sample_rate - Fraction(spec.window_samples, 2)
    return max(0, math.ceil(centre_from / spec.hop_samples))


def new_stream_id() -> str:
    return uuid.uuid4().hex


def check_resume(opened: StreamOpen, session: StreamSession) -> None:
    """A resume must describe the same audio and model as the stream it continues."""
    first = session.opened
    same = (
        opened.sample_rate == first.sample_rate
        and opened.channels == first.channels
        and opened.encoding == first.encoding
    )
    if not same:
        raise RequestError(
            f"stream {session.stream_id} carries {first.channels}-channel {first.encoding} at "
            f"{first.sample_rate} Hz; a resume must send the same",
            stream_id=session.stream_id,
        )
    if opened.model not in (None, first.model, str(session.plan.manifest.identity)):
        raise RequestError(
            f"stream {session.stream_id} runs {session.plan.manifest.identity}; a resume cannot "
            "change the model",
            stream_id=session.stream_id,
        )


def unknown_stream(stream_id: str) -> StreamNotFoundError:
    return StreamNotFoundError(
        f"no resumable stream {stream_id!r} for this key: never opened, ended, or dropped "
        "longer ago than the server keeps it",
        stream_id=stream_id,
    )
