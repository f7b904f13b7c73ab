"""The gateway's side of BirdNET verification: per request (``verify=true``) and shadow.

The Verifier model service runs BirdNET v2.4 behind its own readiness probe and circuit
breaker (a one-path :class:`PathRouter`, never part of the embedding paths): when it is
down, unready or open, a ``verify=true`` request is still answered 200, its verification
marked unavailable with the reason, and the embedding call is never held up by it (the two
run side by side; a failing verifier fails fast).

Shadow sampling verifies ``verification.sample_rate`` of the requests after their answer is
sent: the gateway keeps the sampled request's BirdNET windows (at most the queue's free
room, so memory stays bounded) and hands one job to a bounded queue that a background task
drains; a full queue drops the job and counts its windows as ``dropped``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import anyio

from sevensense.artifacts.registry import Artifact, ModelRegistry
from sevensense.audio.decode import AudioSource
from sevensense.audio.pipeline import PreprocessConfig, StreamStats
from sevensense.audio.windowing import Window
from sevensense.errors import SevensenseError
from sevensense.inference.engine import EmbedOptions, preprocess_config
from sevensense.serving.model_paths.router import ModelPath, PathRouter
from sevensense.serving.model_service.rpc import WindowItem, WindowOutput, from_bytes, to_bytes
from sevensense.serving.telemetry.metrics import metrics
from sevensense.settings import Settings
from sevensense.verification.agreement import (
    DISABLED,
    NO_MAPPED_CLASSES,
    NO_WINDOWS,
    UNAVAILABLE,
    RequestVerification,
    WindowVerification,
    sigmoid,
    summarize,
    unavailable,
    verify_sequence,
)
from sevensense.verification.offline import is_trivial, trivial_reason
from sevensense.verification.species_map import SpeciesMap, species_map_for
from sevensense.verification.streams import paired_windows

T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """How one request is verified: ``answer`` set means nothing is to be computed."""

    shadow: bool
    answer: RequestVerification | None = None
    verifier: Artifact | None = None
    config: PreprocessConfig | None = None
    species_map: SpeciesMap | None = None
    budget: int = 0  # shadow: verifier windows this request may hold
    birdnet_threshold: float = 0.5
    discrepancy_threshold: float = 0.5

    @property
    def active(self) -> bool:
        return self.answer is None and self.config is not None


@dataclass
class ShadowJob:
    model: tuple[str, str]
    plan: Plan
    primary_window_s: float
    primary: list[tuple[float, bytes | None]]
    verifier: list[Window] = field(default_factory=list)


@dataclass
class ChunkCheck:
    """A chunk's BirdNET side: its new BirdNET windows and what the verifier said. The
    samples are let go once sent (verify=true), so a long request holds only (index, start)
    and the scores, not 576 KB per BirdNET window."""

    windows: list[Window] = field(default_factory=list)
    outputs: list[WindowOutput] | None = None
    error: str | None = None
    spans: list[tuple[int, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.spans = [(w.index, w.start_s) for w in self.windows]


class PairTaker:
    """Primary windows in chunks, each chunk with the BirdNET windows first needed by it;
    only for a request being verified (an unverified upload is windowed by ``audio`` alone).

    In shadow mode it holds at most ``budget`` BirdNET windows; primary windows past that
    point are left out of the shadow job."""

    def __init__(
        self, source: AudioSource, config: PreprocessConfig, stats: StreamStats, plan: Plan
    ) -> None:
        if not plan.active or plan.config is None:
            raise ValueError("PairTaker needs an active verification plan")
        self.plan = plan
        self._pairs = paired_windows(source, config, plan.config, stats, StreamStats())
        self._last = -1
        self.held = 0
        self.covered = 0  # primary windows whose BirdNET windows were all kept
        self._full = False

    def take(self, n: int) -> tuple[list[Window], list[Window]]:
        budget = self.plan.budget if self.plan.shadow else None
        windows: list[Window] = []
        fresh: list[Window] = []
        for w, vs in itertools.islice(self._pairs, n):
            windows.append(w)
            for v in vs:
                if v.index <= self._last:
                    continue
                self._last = v.index
                if budget is not None and self.held >= budget:
                    self._full = True
                    continue
                fresh.append(v)
                self.held += 1
            if not self._full:
                self.covered += 1
        return windows, fresh


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "no answer within verification.timeout_s"
    if isinstance(exc, SevensenseError):
        return exc.message[:300]
    return (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)[:300]


def record(model: tuple[str, str], results: Sequence[WindowVerification]) -> None:
    m = metrics()
    for v in results:
        if v.agreement is None:
            m.verification_windows.labels(*model, v.reason or "unknown").inc()
        else:
            m.verification_windows.labels(*model, "counted").inc()
            m.verification_agreement.labels(*model).observe(v.agreement)


def compute(
    plan: Plan,
    primary_window_s: float,
    primary: Sequence[tuple[float, bytes | None]],
    verifier: Sequence[tuple[tuple[int, float], WindowOutput]],
) -> list[WindowVerification]:
    """Pure apart from decoding bytes: primary logits and BirdNET outputs → verifications."""
    assert plan.species_map is not None and plan.config is not None
    settings_window_s = plan.config.window_samples / plan.config.sample_rate
    return verify_sequence(
        [(start, sigmoid(from_bytes(lg)) if lg else None) for start, lg in primary],
        [
            (index, start, sigmoid(from_bytes(o.logits)))
            for (index, start), o in verifier
            if o.logits is not None
        ],
        primary_window_s=primary_window_s,
        verifier_window_s=settings_window_s,
        species_map=plan.species_map,
        birdnet_threshold=plan.birdnet_threshold,
        discrepancy_threshold=plan.discrepancy_threshold,
    )


class ShadowQueue:
    """Bounded in windows held; drained by one task on the gateway's event loop."""

    def __init__(self, size: int, verifier: GatewayVerifier) -> None:
        self.size = size
        self.verifier = verifier
        self.pending = 0
        self._queue: asyncio.Queue[ShadowJob] | None = None
        self._task: asyncio.Task[None] | None = None

    def free(self) -> int:
        return max(0, self.size - self.pending)

    def offer(self, job: ShadowJob) -> bool:
        n = len(job.verifier)
        if n == 0 or n > self.free():
            metrics().verification_windows.labels(*job.model, "dropped").inc(len(job.primary))
            return False
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain(self._queue))
        self.pending += n
        self._queue.put_nowait(job)
        return True

    async def _drain(self, queue: asyncio.Queue[ShadowJob]) -> None:
        while True:
            job = await queue.get()
            try:
                await self.verifier.run_shadow(job)
            except Exception as exc:  # never let one job end the drain
                log.warning("shadow verification failed: %s", exc)
            finally:
                self.pending -= len(job.verifier)
                queue.task_done()


class GatewayVerifier:
    def __init__(self, settings: Settings, registry: ModelRegistry, path: ModelPath | None) -> None:
        self.settings = settings
        self.config = settings.verification
        self.registry = registry
        self.router = (
            PathRouter([path], probe_every_s=settings.serving.probe_interval_s) if path else None
        )
        self.shadow = ShadowQueue(self.config.queue_size, self)
        self._rng = random.Random()
        self._artifact: tuple[float, Artifact] | None = None

    # --- planning ----------------------------------------------------------------------------

    def _verifier(self) -> Artifact:
        """The verifier's artifact, from a registry scan at most once a minute."""
        now = time.monotonic()
        if self._artifact is None or now - self._artifact[0] > 60.0:
            found = self.registry.resolve(self.config.model, default_variant="base")
            self._artifact = (now, found)
        return self._artifact[1]

    def _answer(self, reason: str, **extra: object) -> RequestVerification:
        return RequestVerification.model_validate(
            {
                "verifier": None,
                "available": False,
                "reason": reason,
                "birdnet_threshold": self.config.birdnet_threshold,
                "discrepancy_threshold": self.config.discrepancy_threshold,
                **extra,
            }
        )

    def plan(self, artifact: Artifact, requested: bool) -> Plan | None:
        """None: this request is not verified at all."""
        rate = self.config.sample_rate
        shadow = not requested and rate > 0 and self._rng.random() < rate
        if not requested and not shadow:
            return None
        if self.router is None:
            return Plan(shadow, answer=self._answer(DISABLED)) if requested else None
        try:
            verifier = self._verifier()
            if is_trivial(artifact, verifier):
                if shadow:
                    return None
                return Plan(
                    shadow,
                    answer=self._answer(
                        trivial_reason(artifact),
                        available=True,
                        trivial=True,
                        verifier=str(verifier.manifest.identity),
                    ),
                )
            species_map = species_map_for(artifact, verifier)
        except SevensenseError as exc:
            return Plan(shadow, answer=self._answer(f"{UNAVAILABLE}: {exc.message}"))
        if species_map.mapped == 0:
            return Plan(shadow, answer=self._answer(NO_MAPPED_CLASSES))
        options = EmbedOptions(
            overlap=verifier.manifest.default_overlap,
            max_duration_s=self.settings.serving.max_audio_s,
        )
        return Plan(
            shadow,
            verifier=verifier,
            config=preprocess_config(self.settings, verifier.manifest, options),
            species_map=species_map,
            budget=self.shadow.free() if shadow else 0,
            birdnet_threshold=self.config.birdnet_threshold,
            discrepancy_threshold=self.config.discrepancy_threshold,
        )

    def result(
        self, plan: Plan, windows: list[WindowVerification] | None, error: str | None
    ) -> RequestVerification:
        assert plan.verifier is not None and plan.species_map is not None
        ident = str(plan.verifier.manifest.identity)
        if error is not None or windows is None:
            return self._answer(
                f"{UNAVAILABLE}: {error or 'no answer'}",
                verifier=ident,
                mapped_classes=plan.species_map.mapped,
            )
        return RequestVerification(
            verifier=ident,
            available=True,
            reason=None if windows else NO_WINDOWS,
            mapped_classes=plan.species_map.mapped,
            birdnet_threshold=self.config.birdnet_threshold,
            discrepancy_threshold=self.config.discrepancy_threshold,
            summary=summarize(windows),
        )

    # --- calls -------------------------------------------------------------------------------

    async def call(self, plan: Plan, windows: Sequence[Window]) -> list[WindowOutput]:
        """BirdNET's outputs for ``windows``; raises when the verifier cannot answer."""
        assert self.router is not None and plan.verifier is not None
        ref = str(plan.verifier.manifest.identity)
        items = [WindowItem(model=ref, samples=to_bytes(w.samples), logits=True) for w in windows]
        outputs, _, _ = await asyncio.wait_for(
            self.router.run(items, "auto"), timeout=self.config.timeout_s
        )
        return outputs

    async def alongside(self, plan: Plan | None, check: ChunkCheck, primary: Awaitable[T]) -> T:
        """The chunk's embedding call, with its BirdNET call beside it for verify=true. The
        BirdNET call never raises, and never outlives the embedding call's failure."""
        if plan is None or plan.shadow or not plan.active or not check.windows:
            return await primary

        async def verify() -> None:
            try:
                check.outputs = await self.call(plan, check.windows)
            except Exception as exc:
                check.error = describe_error(exc)
            finally:
                check.windows = []

        task = asyncio.create_task(verify())
        try:
            result = await primary
        except BaseException:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise
        await task
        return result

    async def finish(
        self,
        plan: Plan | None,
        model: tuple[str, str],
        window_s: float,
        primary: list[tuple[Window, WindowOutput]],
        checks: list[ChunkCheck],
        taker: PairTaker | None,
    ) -> tuple[RequestVerification | None, list[WindowVerification] | None]:
        """verify=true: the request's verification; shadow: the job queued, nothing shown."""
        if plan is None:
            return None, None
        if plan.answer is not None:
            return (None, None) if plan.shadow else (plan.answer, None)
        spans = [(w.start_s, o.logits) for w, o in primary]
        pairs = [
            (v, o)
            for c in checks
            if c.outputs is not None
            for v, o in zip(c.spans, c.outputs, strict=True)
        ]
        if plan.shadow:
            assert taker is not None  # an active plan windows through a PairTaker
            job = ShadowJob(
                model,
                plan,
                window_s,
                spans[: taker.covered],
                [v for c in checks for v in c.windows],
            )
            dropped = len(spans) - len(job.primary)
            if dropped:
                metrics().verification_windows.labels(*model, "dropped").inc(dropped)
            self.shadow.offer(job)
            return None, None
        error = next((c.error for c in checks if c.error), None)
        if error is not None:
            metrics().verification_windows.labels(*model, "unavailable").inc(len(spans))
            return self.result(plan, None, error), [unavailable() for _ in spans]
        results = await anyio.to_thread.run_sync(compute, plan, window_s, spans, pairs)
        record(model, results)
        return self.result(plan, results, None), results

    async def run_shadow(self, job: ShadowJob) -> None:
        try:
            outputs = await self.call(job.plan, job.verifier)
        except Exception as exc:
            metrics().verification_windows.labels(*job.model, "unavailable").inc(len(job.primary))
            log.info("shadow verification unavailable: %s", exc)
            return
        pairs = [((w.index, w.start_s), o) for w, o in zip(job.verifier, outputs, strict=True)]
        results = await anyio.to_thread.run_sync(
            compute, job.plan, job.primary_window_s, job.primary, pairs
        )
        record(job.model, results)

    def describe(self) -> dict[str, object]:
        path = self.router.paths[0] if self.router else None
        return {
            "enabled": path is not None,
            "sample_rate": self.config.sample_rate,
            "shadow_queue": {"held_windows": self.shadow.pending, "size": self.shadow.size},
            **(path.describe() if path else {}),
        }
