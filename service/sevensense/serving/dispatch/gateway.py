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
from dataclasses import dataclass
from typing import Any, BinaryIO

import anyio
import numpy as np

from sevensense.agile.apply import is_live, pairs, with_custom
from sevensense.agile.served_head import HeadRef, head_refusal
from sevensense.agile.store import Classifier, ClassifierStore
from sevensense.artifacts.manifest import OutputRole
from sevensense.artifacts.registry import Artifact
from sevensense.audio.decode import NamedSource
from sevensense.audio.pipeline import StreamStats, prepare_windows
from sevensense.audio.windowing import Window
from sevensense.embeddings.quality import process_monitors
from sevensense.errors import NoModelPathError, QueueError, RequestError, SevensenseError
from sevensense.inference.engine import (
    EmbedOptions,
    InferenceMeta,
    WindowResult,
    species_mask,
    to_results,
)
from sevensense.jobs.records import DetectRequest, IndexTarget, JobRecord
from sevensense.jobs.submit import Deferrer
from sevensense.outputs.response import ZERO, EmbedOutcome, Timing
from sevensense.planning.options import MAX_OVERLAP, PlanLimits
from sevensense.planning.plan import Planner, RequestPlan
from sevensense.serving.dispatch.birdnet_check import ChunkCheck, GatewayVerifier, PairTaker
from sevensense.serving.model_paths.fallback import ChunkResult, DeferRequest, FallbackChain
from sevensense.serving.model_paths.router import PathRouter
from sevensense.serving.model_service.rpc import WindowItem, from_bytes, to_bytes
from sevensense.serving.rollout.resolver import ModelResolver
from sevensense.serving.schemas import EmbedParams
from sevensense.serving.telemetry import tracing
from sevensense.serving.telemetry.metrics import metrics, publish_quality
from sevensense.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class DeferredOutcome:
    """The request could not be served now and was queued (202)."""

    job: JobRecord
    reason: str


@dataclass
class _Chunk:
    windows: list[Window]
    result: ChunkResult | None = None
    check: ChunkCheck = dataclasses.field(default_factory=ChunkCheck)


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


def _served_custom(
    classifier: Classifier | None, results: list[WindowResult], done: list[ChunkResult]
) -> list[WindowResult]:
    """The classifier's scores the model hosts computed in their batches; a window served
    from the embedding cache never reached a host and is scored here by the same head, and
    a zero-vector window gets none. A host's head refusal is the request's (404/409)."""
    if classifier is None or not results:
        return results
    outputs = [o for r in done for o in r.outputs]
    served = [s for r in done for s in r.served]
    for o in outputs:
        if o.head_error is not None:
            raise head_refusal(o.head_error)
    out = list(results)
    missing: list[int] = []
    classes = classifier.head.classes
    for i, (result, output, how) in enumerate(zip(results, outputs, served, strict=True)):
        if how == ZERO or not is_live(result):
            continue
        if output.custom is not None:
            out[i] = dataclasses.replace(result, custom=pairs(classes, from_bytes(output.custom)))
        else:
            missing.append(i)
    scored = with_custom(classifier, [out[i] for i in missing])
    for i, result in zip(missing, scored, strict=True):
        out[i] = result
    return out


class Gateway:
    def __init__(
        self,
        settings: Settings,
        router: PathRouter,
        resolver: ModelResolver,
        deferrer: Deferrer | None = None,
        verifier: GatewayVerifier | None = None,
    ) -> None:
        self.settings = settings
        self.router = router
        self.resolver = resolver
        self.chain = FallbackChain(settings, router, resolver.registry)
        self.planner = Planner(settings, resolver.registry)
        self.limits = PlanLimits(MAX_OVERLAP, settings.serving.max_audio_s)
        self.deferrer = deferrer
        self.verifier = verifier or GatewayVerifier(settings, resolver.registry, None)

    # --- one recording ----------------------------------------------------------------------

    async def prepare(self, params: EmbedParams, routing_key: str) -> RequestPlan:
        """Version, reducer, species filter and windowing of a request, before any audio is
        read: an upload and a live stream are planned by this one method."""
        # In a thread: with the SSM rollout store a poll is a blocking network call.
        model = params.model
        if params.classifier and (model is None or ":" not in model):
            # a classifier belongs to one model version: unpinned, the request runs on it
            store = ClassifierStore(self.settings.models_dir)
            found = await anyio.to_thread.run_sync(
                store.resolve, params.classifier, params.classifier_tenant
            )
            space = found.manifest.space
            if model is None or model == space.model_name:
                model = f"{space.model_name}:{space.model_version}"
        artifact = await anyio.to_thread.run_sync(self.resolver.resolve, model, routing_key)
        if not artifact.present:
            self.resolver.registry.verify(artifact)  # raises ArtifactMissingError with the fix
        # In a thread: the first filter at a place runs the range model, and a reducer's
        # model digest may need hashing. A reducer for another model is refused here, before
        # any audio is read.
        return await anyio.to_thread.run_sync(
            self.planner.plan, artifact, params.request_options(), self.limits
        )

    async def embed(
        self,
        source: BinaryIO,
        params: EmbedParams,
        routing_key: str,
        owner: str = "-",
        index: IndexTarget | None = None,
        filename: str | None = None,
    ) -> EmbedOutcome | DeferredOutcome:
        """``filename``: the upload's name, for the decoder's extension fallback (the
        CLI's for the same file on disk)."""
        started = time.perf_counter()
        prepared = await self.prepare(params, routing_key)
        artifact, manifest, transform = prepared.artifact, prepared.manifest, prepared.transform
        species, options, config, k = (
            prepared.species,
            prepared.options,
            prepared.config,
            prepared.k,
        )
        window_s = prepared.window_s
        plan = self.verifier.plan(artifact, params.verify)
        need_logits = k > 0 or params.include_logits or bool(plan and plan.active)
        stats = StreamStats()
        # BirdNET's windows are cut beside the model's only when a request is verified.
        audio = NamedSource(source, filename)
        pairs = PairTaker(audio, config, stats, plan) if plan and plan.active else None
        plain = prepare_windows(audio, config, stats) if pairs is None else None

        def take(n: int) -> tuple[list[Window], list[Window]]:
            if pairs is not None:
                return pairs.take(n)
            assert plain is not None
            return list(itertools.islice(plain, n)), []

        ref = str(manifest.identity)
        head = HeadRef.of(prepared.classifier, transform) if prepared.classifier else None
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
                        head=head,
                        sent_at=time.time(),
                        trace=tracing.carrier(),
                    )
                    for w in chunk.windows
                ]
                samples = [w.samples for w in chunk.windows]
                chunk.result = await self.verifier.alongside(
                    plan, chunk.check, self.chain.run(items, samples, manifest, params.route)
                )
                return chunk
            finally:
                slots.release()

        try:
            while True:
                await slots.acquire()
                batch, fresh = await anyio.to_thread.run_sync(take, serving.chunk_windows)
                if not batch:
                    slots.release()
                    break
                tasks.append(asyncio.create_task(dispatch(_Chunk(batch, check=ChunkCheck(fresh)))))
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
            asked = {
                "reduce": params.reduce,
                "project": params.project,
                "curvature": params.curvature,
                "max_norm": params.max_norm,
            }
            asked_options = params.request_options()
            detect = (
                DetectRequest.of(
                    asked_options, params.format, filename or params.recording_id or "upload"
                )
                if asked_options.detect
                else None
            )
            return await self._defer(
                source,
                ref,
                resolved,
                owner,
                defer.reason,
                asked,
                index,
                filename,
                detect,
                params.verify,
                prepared.classifier.ref if prepared.classifier else None,
                params.classifier_tenant,
            )
        except BaseException:
            await _cancel(tasks)
            raise
        tracing.stage_spans(stats, pre_start)

        post = time.perf_counter()
        with tracing.span("postprocess", windows=stats.windows):
            results = self._postprocess(
                chunks, manifest.identity.name, artifact, k, params, options.species
            )
            results = _served_custom(
                prepared.classifier,
                transform.apply_results(results),
                [c.result for c in chunks if c.result is not None],
            )
        post_ms = (time.perf_counter() - post) * 1e3
        done = [c.result for c in chunks if c.result is not None]
        verification, window_checks = await self.verifier.finish(
            plan,
            (manifest.name, manifest.version),
            window_s,
            [
                (w, o)
                for c in chunks
                if c.result
                for w, o in zip(c.windows, c.result.outputs, strict=True)
            ],
            [c.check for c in chunks],
            pairs,
        )
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
            resampler=config.resample_quality,
            routing_key_hash=hashlib.sha256(routing_key.encode()).hexdigest()[:12],
            timing=Timing.of(
                stats,
                total_s=time.perf_counter() - started,
                queue_ms=float(np.mean([o.queue_ms for o in calls])) if calls else 0.0,
                infer_ms=float(np.mean([o.compute_ms for o in calls])) if calls else 0.0,
                postprocess_ms=post_ms,
            ),
            served=[s for r in done for s in r.served],
            similarity=[v for r in done for v in r.similarity],
            species_filter=species.summary() if species else None,
            species=species.species if species else None,
            transform=transform,
            classifier=prepared.classifier.ref if prepared.classifier else None,
            verification=verification,
            window_verification=window_checks,
        )

    async def embed_windows(
        self, plan: RequestPlan, params: EmbedParams, windows: list[Window], logits: bool = False
    ) -> list[tuple[WindowResult, str, float | None, bytes | None]]:
        """A live stream's windows as soon as they are cut: the same call, fallback chain and
        post-processing as one chunk of an upload, so they join the model services'
        adaptive batches beside ``/embed`` traffic. Returns (result, how served, cache
        similarity, raw logits when ``logits`` asks for them, for verification) per window."""
        manifest = plan.manifest
        head = HeadRef.of(plan.classifier, plan.transform) if plan.classifier else None
        items = [
            WindowItem(
                model=str(manifest.identity),
                samples=to_bytes(w.samples),
                logits=plan.k > 0 or params.include_logits or logits,
                spectrogram=params.include_spectrogram,
                head=head,
                sent_at=time.time(),
                trace=tracing.carrier(),
            )
            for w in windows
        ]
        try:
            result = await self.chain.run(
                items, [w.samples for w in windows], manifest, params.route
            )
        except DeferRequest as defer:
            raise NoModelPathError(
                f"no model path can answer now and a live stream cannot wait in the deferred "
                f"queue: {defer.reason}",
                retry_after_s=5.0,
            ) from None
        results = self._postprocess(
            [_Chunk(windows, result)],
            manifest.identity.name,
            plan.artifact,
            plan.k,
            params,
            plan.options.species,
        )
        results = _served_custom(plan.classifier, plan.transform.apply_results(results), [result])
        raw = [o.logits if logits else None for o in result.outputs]
        return list(zip(results, result.served, result.similarity, raw, strict=True))

    async def _defer(
        self,
        source: BinaryIO,
        ref: str,
        options: EmbedOptions,
        owner: str,
        reason: str,
        transform: dict[str, Any] | None = None,
        index: IndexTarget | None = None,
        filename: str | None = None,
        detect: DetectRequest | None = None,
        verify: bool = False,
        classifier: str | None = None,
        classifier_tenant: str | None = None,
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
                    filename=filename,
                    trace=tracing.carrier(),
                    transform=transform,
                    index=index,
                    detect=detect,
                    verify=verify,
                    classifier=classifier,
                    classifier_tenant=classifier_tenant,
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
        species: tuple[str, ...] | None = None,
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
        labels = self.planner.labels(artifact)
        results = list(
            to_results(
                pending,
                embeddings,
                logits,
                spectro,
                metas,
                labels,
                k,
                params.include_logits,
                species_mask(labels, species),
            )
        )
        for i, has in enumerate(with_logits):
            if served[i] == ZERO:
                results[i] = _zero_result(results[i])
            elif logits is not None and not has:
                results[i] = dataclasses.replace(results[i], top_k=[], logits=None)
        monitors = process_monitors(self.settings.quality)
        results = monitors.observe(results, skip=[how == ZERO for how in served])
        observed = {r.meta.model for r, how in zip(results, served, strict=True) if how != ZERO}
        for identity in observed:
            publish_quality(monitors.monitor(identity).report())
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
                self.chain.quantized.warm(self.resolver.resolve(None, "warm-up").manifest)
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
            "verifier": self.verifier.describe(),  # never part of readiness
        }
        return paths or backup, detail
