"""The gateway's work for one recording, free of HTTP: pick the version, window, dispatch
chunks to the model paths, reassemble in order, post-process.

Decoding streams block by block in a worker thread; at most ``chunk_concurrency`` chunks of
``chunk_windows`` windows are in flight, so the samples held at once are bounded whatever
the recording's length. Every window of a request goes to the one version chosen for it at
the start, which is what makes a hot swap safe for requests already running.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import anyio
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sevensense.artifacts.labels import load_labels
from sevensense.artifacts.manifest import OutputRole
from sevensense.artifacts.registry import Artifact, ModelRef, ModelRegistry
from sevensense.audio.pipeline import StreamStats, prepare_windows
from sevensense.audio.windowing import Window
from sevensense.deferred.job_store import JobStore
from sevensense.deferred.records import JobRecord
from sevensense.deferred.submit import Deferrer
from sevensense.errors import ModelNotFoundError, QueueError, RequestError, SevensenseError
from sevensense.inference.engine import (
    EmbeddingEngine,
    EmbedOptions,
    InferenceMeta,
    WindowResult,
    to_results,
)
from sevensense.serving import tracing
from sevensense.serving.fallback import ZERO, ChunkResult, DeferRequest, FallbackChain
from sevensense.serving.metrics import metrics
from sevensense.serving.paths import PathRouter
from sevensense.serving.rollout import RolloutStore, choose_version
from sevensense.serving.wire import (
    OutputFormat,
    Route,
    WindowItem,
    from_bytes,
    to_bytes,
)
from sevensense.settings import Settings

log = logging.getLogger(__name__)

PERCH = "perch-v2"
MAX_OVERLAP = 0.9


class EmbedParams(BaseModel):
    """Per-request options, sent as multipart form fields next to the audio."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        None, max_length=128, description="name (canary-routed) or name:version[:variant] (pinned)"
    )
    route: Route = "auto"
    overlap: float | None = Field(None, ge=0.0, le=0.9)
    hop_s: float | None = Field(None, gt=0.0, le=60.0, description="overrides overlap")
    top_k: int | None = Field(None, ge=0, le=100)
    include_logits: bool = False
    include_spectrogram: bool = False
    format: OutputFormat = "json"
    recording_id: str | None = Field(
        None, max_length=256, description="routing key: every retry of it hits the same version"
    )


@dataclass
class EmbedOutcome:
    artifact: Artifact
    results: list[WindowResult]
    stats: StreamStats
    route: str
    providers: list[str]
    fallback: bool
    window_s: float
    hop_s: float
    routing_key_hash: str
    timing: dict[str, float]
    served: list[str] = field(default_factory=list)
    similarity: list[float | None] = field(default_factory=list)


@dataclass
class DeferredOutcome:
    """The request could not be served now and was queued (202)."""

    job: JobRecord
    reason: str


@dataclass
class _Chunk:
    windows: list[Window]
    result: ChunkResult | None = None


def default_model(settings: Settings, artifacts: list[Artifact]) -> str:
    """Perch 2.0 when its weights are here (production), else the profile's model (BirdNET)."""
    configured = settings.serving.default_model
    if configured != "auto":
        return configured
    if any(a.manifest.name == PERCH and a.present for a in artifacts):
        return PERCH
    return settings.inference.model


def served_refs(
    settings: Settings,
    registry: ModelRegistry,
    store: RolloutStore,
    artifacts: list[Artifact] | None = None,
) -> list[str]:
    """Every version the rollouts route to, plus the default: what a model service warms."""
    listing = registry.artifacts() if artifacts is None else artifacts
    refs: list[str] = []
    try:
        default = registry.resolve(
            default_model(settings, listing),
            default_variant=settings.inference.model_variant,
            artifacts=listing,
        )
        refs.append(str(default.manifest.identity))
    except SevensenseError as exc:
        log.error("default model unavailable: %s", exc)
    for name, state in store.load().items():
        refs.extend(f"{name}:{v}:{state.variant}" for v, w in state.weights.items() if w > 0)
    return list(dict.fromkeys(refs))


def _take(windows: Iterator[Window], n: int) -> list[Window]:
    return list(itertools.islice(windows, n))


async def _cancel(tasks: list[asyncio.Task[_Chunk]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _zero_result(result: WindowResult) -> WindowResult:
    """An all-zero embedding that says so: invalid, flagged, no scores."""
    zero = np.zeros_like(result.embedding)
    quality = dataclasses.replace(
        result.quality, norm=0.0, raw_norm=0.0, zero_norm=True, sparsity=1.0
    )
    return dataclasses.replace(result, embedding=zero, quality=quality, top_k=[], logits=None)


class Gateway:
    def __init__(
        self,
        settings: Settings,
        router: PathRouter,
        store: RolloutStore,
        deferrer: Deferrer | None = None,
        jobs: JobStore | None = None,
    ) -> None:
        self.settings = settings
        self.router = router
        self.store = store
        self.registry = ModelRegistry(settings.models_dir)
        self.engine = EmbeddingEngine(settings, self.registry)
        self.chain = FallbackChain(settings, router, self.registry)
        self.deferrer = deferrer
        self.jobs = jobs or (deferrer.jobs if deferrer else None)
        self._artifacts: list[Artifact] = []
        self._scanned_at = float("-inf")
        self._labels: dict[tuple[str, str, str], list[str] | None] = {}
        self._lock = threading.Lock()

    # --- models -----------------------------------------------------------------------------

    def artifacts(self, max_age_s: float = 2.0) -> list[Artifact]:
        """The registry on disk, rescanned at most every ``max_age_s`` (new versions appear)."""
        with self._lock:
            if time.monotonic() - self._scanned_at > max_age_s:
                self._artifacts = self.registry.artifacts()
                self._scanned_at = time.monotonic()
            return self._artifacts

    def default_model(self) -> str:
        return default_model(self.settings, self.artifacts())

    def resolve(self, model: str | None, routing_key: str) -> Artifact:
        """A pinned ``name:version`` is honoured; a bare name follows its rollout weights."""
        ref = ModelRef.parse(model or self.default_model())
        if ref.version is None:
            state = self.store.load().get(ref.name)
            if state is not None:
                version = choose_version(state, routing_key, ref.name)
                ref = ModelRef(ref.name, version, ref.variant or state.variant)
        variant = ref.variant or self.settings.inference.model_variant
        try:
            return self.registry.resolve(ref, default_variant=variant, artifacts=self.artifacts())
        except ModelNotFoundError:
            # The cached scan may predate a version registered a moment ago.
            return self.registry.resolve(ref, default_variant=variant)

    def labels(self, artifact: Artifact) -> list[str] | None:
        key = artifact.key
        if key not in self._labels:
            spec = artifact.manifest.labels
            self._labels[key] = load_labels(spec, artifact.directory) if spec else None
        return self._labels[key]

    # --- one recording ----------------------------------------------------------------------

    async def embed(
        self, source: BinaryIO, params: EmbedParams, routing_key: str, owner: str = "-"
    ) -> EmbedOutcome | DeferredOutcome:
        started = time.perf_counter()
        # In a thread: with the SSM rollout store a poll is a blocking network call.
        artifact = await anyio.to_thread.run_sync(self.resolve, params.model, routing_key)
        manifest = artifact.manifest
        if not artifact.present:
            self.registry.verify(artifact)  # raises ArtifactMissingError with the fix
        window_s = manifest.window_samples / manifest.sample_rate
        overlap = params.overlap
        if params.hop_s is not None:
            if params.hop_s > window_s:
                raise RequestError(
                    f"hop_s {params.hop_s} exceeds the {window_s:g}-s window of {manifest.name}"
                )
            overlap = 1.0 - params.hop_s / window_s
        if overlap is not None and overlap > MAX_OVERLAP:
            raise RequestError(
                f"a hop under {1 - MAX_OVERLAP:.0%} of the {window_s:g}-s window "
                f"(overlap over {MAX_OVERLAP:.0%}) is refused: it multiplies the work per second "
                "of audio without adding information"
            )
        options = EmbedOptions(
            overlap=overlap,
            top_k=params.top_k,
            include_logits=params.include_logits,
            include_spectrogram=params.include_spectrogram,
            max_duration_s=self.settings.serving.max_audio_s,
        )
        config = self.engine.preprocess_config(manifest, options)
        k = self.settings.top_k if params.top_k is None else params.top_k
        need_logits = k > 0 or params.include_logits
        stats = StreamStats()
        windows = prepare_windows(source, config, stats)
        ref = str(manifest.identity)
        serving = self.settings.serving
        slots = asyncio.Semaphore(serving.chunk_concurrency)
        tasks: list[asyncio.Task[_Chunk]] = []
        pre_start = tracing.now_ns()

        async def dispatch(chunk: _Chunk) -> _Chunk:
            try:
                items = [
                    WindowItem(
                        model=ref,
                        samples=to_bytes(w.samples),
                        logits=need_logits,
                        spectrogram=params.include_spectrogram,
                        sent_at=time.time(),
                        trace=tracing.carrier(),
                    )
                    for w in chunk.windows
                ]
                samples = [w.samples for w in chunk.windows]
                chunk.result = await self.chain.run(items, samples, manifest, params.route)
                return chunk
            finally:
                slots.release()

        try:
            while True:
                await slots.acquire()
                batch = await anyio.to_thread.run_sync(_take, windows, serving.chunk_windows)
                if not batch:
                    slots.release()
                    break
                tasks.append(asyncio.create_task(dispatch(_Chunk(batch))))
            chunks = await asyncio.gather(*tasks)
        except DeferRequest as defer:
            await _cancel(tasks)
            resolved = dataclasses.replace(
                options,
                top_k=k,
                overlap=config.overlap,
                padding=config.padding,
                energy_threshold=config.energy_threshold,
                resample_quality=config.resample_quality,
                normalization=options.normalization or self.settings.preprocessing.normalization,
            )
            return await self._defer(source, ref, resolved, owner, defer.reason)
        except BaseException:
            await _cancel(tasks)
            raise
        tracing.stage_spans(stats, pre_start)

        post = time.perf_counter()
        with tracing.span("postprocess", windows=stats.windows):
            results = self._postprocess(chunks, manifest.identity.name, artifact, k, params)
        post_ms = (time.perf_counter() - post) * 1e3
        done = [c.result for c in chunks if c.result is not None]
        calls = [o for r in done for o in r.outputs[:1] if o.batch_size]
        providers = sorted({o.provider for r in done for o in r.outputs})
        return EmbedOutcome(
            artifact=artifact,
            results=results,
            stats=stats,
            route=done[-1].path if done else "cpu",
            providers=providers,
            fallback=any(r.fallback for r in done),
            window_s=window_s,
            hop_s=window_s * (1.0 - config.overlap),
            routing_key_hash=hashlib.sha256(routing_key.encode()).hexdigest()[:12],
            timing={
                "total_ms": (time.perf_counter() - started) * 1e3,
                "decode_ms": stats.decode_s * 1e3,
                "resample_ms": stats.resample_s * 1e3,
                "window_ms": stats.window_s * 1e3,
                "queue_ms": float(np.mean([o.queue_ms for o in calls])) if calls else 0.0,
                "infer_ms": float(np.mean([o.compute_ms for o in calls])) if calls else 0.0,
                "postprocess_ms": post_ms,
            },
            served=[s for r in done for s in r.served],
            similarity=[v for r in done for v in r.similarity],
        )

    async def _defer(
        self,
        source: BinaryIO,
        ref: str,
        options: EmbedOptions,
        owner: str,
        reason: str,
    ) -> DeferredOutcome:
        if self.deferrer is None:
            raise QueueError(f"no deferred queue configured; {reason}")
        try:
            job = await anyio.to_thread.run_sync(
                functools.partial(
                    self.deferrer.submit,
                    source,
                    model=ref,
                    options=options,
                    owner=owner,
                    reason=reason,
                    trace=tracing.carrier(),
                )
            )
        except SevensenseError:
            metrics().deferred_requests.labels("failed").inc()
            raise
        metrics().deferred_requests.labels("queued").inc()
        return DeferredOutcome(job, reason)

    def _postprocess(
        self,
        chunks: list[_Chunk],
        name: str,
        artifact: Artifact,
        k: int,
        params: EmbedParams,
    ) -> list[WindowResult]:
        manifest = artifact.manifest
        pending = [("upload", w) for c in chunks for w in c.windows]
        outputs = [o for c in chunks if c.result for o in c.result.outputs]
        served = [s for c in chunks if c.result for s in c.result.served]
        if not outputs:
            return []
        for o in outputs:
            if (o.model.name, o.model.version) != (manifest.name, manifest.version):
                raise RequestError(
                    f"model service answered with {o.model}, not {manifest.identity}"
                )
        embeddings = np.stack([from_bytes(o.embedding) for o in outputs])
        logits = None
        with_logits = [o.logits is not None for o in outputs]
        if any(with_logits) and manifest.n_classes:
            logits = np.zeros((len(outputs), manifest.n_classes), dtype=np.float32)
            for i, o in enumerate(outputs):
                if o.logits is not None:
                    logits[i] = from_bytes(o.logits)
        spectro = None
        if params.include_spectrogram and all(o.spectrogram is not None for o in outputs):
            shape = tuple(manifest.outputs[OutputRole.SPECTROGRAM].shape[1:])
            spectro = np.stack(
                [
                    from_bytes(o.spectrogram, tuple(int(d) for d in shape))
                    for o in outputs
                    if o.spectrogram is not None
                ]
            )
        metas = [
            InferenceMeta(o.model, o.provider, 0, o.batch_size, o.compute_ms / max(1, o.batch_size))
            for o in outputs
        ]
        results = list(
            to_results(
                pending,
                embeddings,
                logits,
                spectro,
                metas,
                self.labels(artifact),
                k,
                params.include_logits,
            )
        )
        for i, has in enumerate(with_logits):
            if served[i] == ZERO:
                results[i] = _zero_result(results[i])
            elif logits is not None and not has:
                results[i] = dataclasses.replace(results[i], top_k=[], logits=None)
        m = metrics()
        version = manifest.version
        for r, how in zip(results, served, strict=True):
            if how != ZERO:  # the raw norm the post-processing already measured
                m.embedding_norm.labels(name, version).observe(r.quality.raw_norm)
        for provider, count in Counter(o.provider for o in outputs).items():
            m.embed_windows.labels(name, version, provider).inc(count)
        return results

    def warm_fallbacks(self) -> None:
        """Load the default model's quantized variant in the background, so that the first
        request after a path breaks does not also pay for loading it."""
        if "quantized_model" not in self.chain.strategies:
            return

        def warm() -> None:
            try:
                self.chain.quantized.warm(self.resolve(None, "warm-up").manifest)
            except Exception as exc:
                log.warning("quantized fallback not warmed: %s", exc)

        threading.Thread(target=warm, name="warm-quantized", daemon=True).start()

    def describe(self) -> dict[str, Any]:
        return {p.name: p.describe() for p in self.router.paths}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready while a request can be answered without loss: a model path is usable,
        or the profile's chain ends in a strategy that always answers (quantized with its
        breaker closed, the deferred queue)."""
        quantized = self.chain.quantized.breaker
        strategies = self.chain.strategies
        paths = self.router.any_ready()
        backup = ("quantized_model" in strategies and quantized.would_allow()) or (
            "deferred_queue" in strategies and self.deferrer is not None
        )
        detail = {
            "ready": paths or backup,
            "model_paths_ready": paths,
            "paths": self.describe(),
            "fallback": {
                "strategies": strategies,
                "quantized": quantized.snapshot(),
                "cache_entries": len(self.chain.cache),
                "deferred_queue": self.deferrer.queue.name if self.deferrer else None,
            },
        }
        return paths or backup, detail
