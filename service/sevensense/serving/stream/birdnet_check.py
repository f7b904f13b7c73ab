"""verify=true on a live stream: BirdNET windows cut from the same frames, and each primary
window's verification once every BirdNET window centred in it has been answered.

The rule is the one uploads use (:mod:`sevensense.verification.alignment`): a primary window
[s, e] pools the BirdNET windows whose centre lies in [s, e]. On a stream those windows need
audio up to e + half a BirdNET window, so a window's verification follows its result by
about 1.5 s of audio, as its own message. The state lives in the stream's session and
survives a dropped connection like the rest: BirdNET windows cut but not answered are sent
again after a resume, and the last verifications sent are kept to send again like window
results (``last_verified``). A task that rebuilds the stream from its token (another task)
computes the owed verifications again instead (:func:`.sessions.rebuild`): the token's
``vp``/``vq`` and agreement totals say which windows are owed and what was counted.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import numpy as np

from sevensense.audio.live import LiveWindows
from sevensense.audio.windowing import Window
from sevensense.serving.dispatch.birdnet_check import (
    GatewayVerifier,
    Plan,
    compute,
    describe_error,
    record,
)
from sevensense.serving.model_service.rpc import WindowOutput
from sevensense.serving.stream.protocol import StreamVerification
from sevensense.serving.stream.resume import Tally
from sevensense.verification.agreement import AgreementSummary, WindowVerification, unavailable


@dataclass
class _Primary:
    index: int
    start_sample: int
    start_s: float
    end_s: float
    logits: bytes | None


@dataclass
class StreamVerifier:
    plan: Plan
    live: LiveWindows
    primary_window_s: float
    model: tuple[str, str]
    unanswered: list[Window] = field(default_factory=list)
    outputs: dict[int, tuple[float, WindowOutput]] = field(default_factory=dict)
    pending: list[_Primary] = field(default_factory=list)
    error: str | None = None
    tally: Tally = field(default_factory=Tally)  # with what earlier tasks counted (token)
    produced_next: int = 0  # the first primary window whose verification is not computed
    sent_next: int = 0  # the first whose verification may not have been sent
    tally_from: int = 0  # rebuilt: windows before it were counted by an earlier task
    send_after: int = -1  # rebuilt: the client has the verifications up to this start_sample

    @property
    def _window_s(self) -> float:
        config = self.live.config
        return config.window_samples / config.sample_rate

    @property
    def _hop_s(self) -> float:
        spec = self.live.config.window_spec()
        return spec.hop_samples / spec.sample_rate

    def cut(self, mono: np.ndarray) -> list[Window]:
        kept, _ = self.live.push(mono)  # silent BirdNET windows are simply absent
        self.unanswered.extend(kept)
        return kept

    def finish(self) -> list[Window]:
        kept, _ = self.live.finish()
        self.unanswered.extend(kept)
        return kept

    def answered(self, windows: list[Window], outputs: list[WindowOutput] | None) -> None:
        done = {id(w) for w in windows}
        self.unanswered = [w for w in self.unanswered if id(w) not in done]
        if outputs is not None:
            for w, o in zip(windows, outputs, strict=True):
                self.outputs[w.index] = (w.start_s, o)

    def primary(
        self, index: int, start_sample: int, start_s: float, end_s: float, logits: bytes | None
    ) -> None:
        self.pending.append(_Primary(index, start_sample, start_s, end_s, logits))

    def _frontier_s(self) -> float:
        """Centre of the first BirdNET window not answered yet: every window centred before
        it is known. Infinite once the stream is finished and all are answered."""
        if self.unanswered:
            first = min(w.index for w in self.unanswered)
        elif self.live.finished:
            return math.inf
        else:
            first = self.live.next_index
        return first * self._hop_s + self._window_s / 2

    def ready(self) -> list[_Primary]:
        frontier = self._frontier_s()
        done = [p for p in self.pending if p.end_s < frontier]
        self.pending = [p for p in self.pending if p.end_s >= frontier]
        return done

    def verify(self, done: list[_Primary]) -> list[WindowVerification]:
        """CPU work (sigmoids, top-5 sets): run it in a thread; :meth:`count` after."""
        if not done:
            return []
        if self.error is not None:
            return [unavailable(f"verifier_unavailable: {self.error}") for _ in done]
        lo, hi = done[0].start_s, done[-1].end_s
        pairs = [
            ((i, start), o)
            for i, (start, o) in sorted(self.outputs.items())
            if lo <= start + self._window_s / 2 <= hi
        ]
        results = compute(
            self.plan,
            self.primary_window_s,
            [(p.start_s, p.logits) for p in done],
            pairs,
        )
        keep_from = self.pending[0].start_s if self.pending else done[-1].start_s
        for i in [i for i, (s, _) in self.outputs.items() if s + self._window_s / 2 < keep_from]:
            del self.outputs[i]
        return results

    def count(self, done: list[_Primary], results: list[WindowVerification]) -> None:
        """On the event loop (the resume token reads these): a window re-derived after a
        cross-task resume was counted by the task before."""
        counted = []
        for p, v in zip(done, results, strict=True):
            self.produced_next = max(self.produced_next, p.index + 1)
            if p.index >= self.tally_from:
                self.tally.add(v)
                counted.append(v)
        record(self.model, counted)

    def summary(self) -> AgreementSummary:
        return self.tally.summary()


class CrossChecks:
    """One connection's BirdNET calls: in flight beside the model's windows, each primary
    window's verification sent as its own message once its BirdNET windows are answered.
    A verifier failure never fails the stream; the state stays in the session, so a resume
    sends the unanswered BirdNET windows again."""

    def __init__(
        self,
        verifier: GatewayVerifier,
        send: Callable[[str], Awaitable[None]],
        on_answer: Callable[[], None],
        keep: Callable[[int, str], None],
    ) -> None:
        self.verifier = verifier
        self.send = send
        self.on_answer = on_answer  # wakes whoever waits for pending windows to drain
        self.keep = keep  # held for a resume before it is sent, as window results are
        self.tasks: set[asyncio.Task[None]] = set()
        self.keeping: set[asyncio.Task[list[tuple[_Primary, str]]]] = set()  # shielded: see flush
        self.lock = asyncio.Lock()

    def dispatch(self, stream_id: str, check: StreamVerifier, windows: list[Window]) -> None:
        if windows:
            task = asyncio.create_task(self._call(stream_id, check, windows))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _call(self, stream_id: str, check: StreamVerifier, windows: list[Window]) -> None:
        outputs: list[WindowOutput] | None
        try:
            outputs = await self.verifier.call(check.plan, windows)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            check.error = describe_error(exc)
            outputs = None
        check.answered(windows, outputs)
        self.on_answer()
        await self.flush(stream_id, check)

    async def flush(self, stream_id: str, check: StreamVerifier) -> None:
        """Send every verification whose BirdNET windows are all answered, in order (a
        rebuilt stream's re-derived ones the client already has are kept, not sent)."""
        async with self.lock:
            done = check.ready()
            if not done:
                return
            # Shielded: a connection cancelled meanwhile (a drop, a takeover) must not lose
            # verifications taken from ``pending``; they are kept for the resume to resend.
            task = asyncio.create_task(self._verify_and_keep(stream_id, check, done))
            self.keeping.add(task)
            task.add_done_callback(self.keeping.discard)
            messages = await asyncio.shield(task)
            for p, text in messages:
                if p.start_sample > check.send_after:
                    await self.send(text)
                check.sent_next = max(check.sent_next, p.index + 1)

    async def _verify_and_keep(
        self, stream_id: str, check: StreamVerifier, done: list[_Primary]
    ) -> list[tuple[_Primary, str]]:
        results = await anyio.to_thread.run_sync(check.verify, done)
        check.count(done, results)
        messages = []
        for p, v in zip(done, results, strict=True):
            message = StreamVerification(
                stream_id=stream_id,
                index=p.index,
                start_sample=p.start_sample,
                verification=v,
            )
            text = message.model_dump_json(exclude_none=True)
            self.keep(p.start_sample, text)
            messages.append((p, text))
        return messages

    async def settle(self) -> None:
        """After a cancel: let the shielded verifications finish and be kept, so that a
        resume computing what to resend sees them."""
        if self.keeping:
            await asyncio.gather(*list(self.keeping), return_exceptions=True)

    async def drain(self, stream_id: str, check: StreamVerifier | None) -> None:
        """After ``end``: every call answered, every verification sent."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)
        if check is not None:
            await self.flush(stream_id, check)
