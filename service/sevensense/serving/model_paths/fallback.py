"""The fallback chain (ADR-007 §5.1): what serves a chunk when the model paths cannot.

Order is the profile's ``fallback.strategies``; after the model paths (GPU, then CPU when
``cpu`` is listed or the profile's providers include it) come, as configured:

- ``quantized_model``: the int8 variant of the same version, run in the gateway's own
  process. It shares no failure with the model services (another process, another file),
  which is the point of a fallback; it has its own breaker.
- ``cached_embedding``: windows seen before with the same version (exact hash of the
  prepared samples, optionally near-duplicates); only the windows found are served.
- ``deferred_queue``: the whole request is queued and answered 202 (raises
  :class:`DeferRequest`; the gateway stores the upload and enqueues it).
- ``zero_vector``: the remaining windows get an all-zero embedding, flagged per window.

Every window records which strategy produced it. Only ``route=auto`` requests degrade; a
request pinned to a path gets that path's answer, 503 included. Overload (every path shed
the load) only reaches the cache and the deferred queue: running int8 models in the gateway
or answering zeros because of a burst would turn a transient spike into degraded science.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import anyio
import numpy as np

from sevensense.agile.served_head import HeadHost
from sevensense.artifacts.manifest import ModelIdentity, ModelManifest
from sevensense.artifacts.registry import ModelRef, ModelRegistry
from sevensense.errors import ModelNotFoundError, NoModelPathError, OverloadedError
from sevensense.inference.engine import EmbeddingEngine
from sevensense.inference.sessions import LoadedModel
from sevensense.outputs.response import CACHE, QUANTIZED, ZERO
from sevensense.serving.model_paths.breaker import CircuitBreaker
from sevensense.serving.model_paths.embedding_cache import EmbeddingCache
from sevensense.serving.model_paths.router import PathRouter, new_breaker
from sevensense.serving.model_service.host import path_settings, run_items
from sevensense.serving.model_service.rpc import WindowItem, WindowOutput, from_bytes, to_bytes
from sevensense.serving.schemas import Route
from sevensense.serving.telemetry.metrics import metrics
from sevensense.settings import Settings

log = logging.getLogger(__name__)


class DeferRequest(Exception):  # noqa: N818 -- a signal to the gateway, not an error
    """No strategy before the deferred queue could serve; the request is to be queued."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class ChunkResult:
    outputs: list[WindowOutput]
    served: list[str]
    similarity: list[float | None]
    fallback: bool
    path: str = "cpu"


@dataclass
class LocalQuantized:
    """The int8 variant of the requested version, loaded lazily in the gateway process."""

    settings: Settings
    registry: ModelRegistry
    breaker: CircuitBreaker
    variant: str = QUANTIZED
    _engine: EmbeddingEngine | None = None
    _heads: HeadHost | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def ref_for(self, manifest: ModelManifest) -> str | None:
        """The quantized ref of the same name and version, if that artifact exists."""
        if manifest.variant == self.variant:
            return None
        ref = ModelRef(manifest.name, manifest.version, self.variant)
        try:
            self.registry.resolve(ref)
        except ModelNotFoundError:
            return None
        return str(ref)

    def _model(self, ref: str) -> LoadedModel:
        with self._lock:
            if self._engine is None:
                self._engine = EmbeddingEngine(path_settings(self.settings, "cpu"), self.registry)
                self._heads = HeadHost(self.settings)
        return self._engine.model(ref)

    def warm(self, manifest: ModelManifest) -> None:
        ref = self.ref_for(manifest)
        if ref is not None:
            self._model(ref)

    def run_sync(self, ref: str, items: list[WindowItem]) -> list[WindowOutput]:
        model = self._model(ref)
        assert self._engine is not None
        return run_items(self._engine, model, items, heads=self._heads).outputs


def _substitute(ident: ModelIdentity, provider: str, embedding: np.ndarray) -> WindowOutput:
    return WindowOutput(
        model=ident,
        provider=provider,
        embedding=to_bytes(embedding),
        batch_size=0,
        queue_ms=0.0,
        compute_ms=0.0,
    )


class FallbackChain:
    def __init__(
        self,
        settings: Settings,
        router: PathRouter,
        registry: ModelRegistry,
        cache: EmbeddingCache | None = None,
        quantized: LocalQuantized | None = None,
    ) -> None:
        fallback = settings.fallback
        self.settings = settings
        self.router = router
        self.strategies = list(fallback.strategies)
        self.cache = cache or EmbeddingCache(
            fallback.cache_max_entries if "cached_embedding" in self.strategies else 0,
            fallback.cache_similarity,
        )
        self.quantized = quantized or LocalQuantized(
            settings, registry, new_breaker(QUANTIZED, fallback.breaker), fallback.quantized_variant
        )

    def route_for(self, route: Route) -> Route:
        """The CPU path backs the GPU only when the profile lists ``cpu`` (strategy or
        provider); otherwise an ``auto`` request goes to the first path alone."""
        paths = [p.name for p in self.router.paths]
        cpu_backs_gpu = "cpu" in self.strategies or "cpu" in self.settings.inference.providers
        first = paths[0] if paths else "cpu"
        if route == "auto" and len(paths) > 1 and not cpu_backs_gpu and first != "verifier":
            return first
        return route

    async def run(
        self,
        items: list[WindowItem],
        samples: list[np.ndarray],
        manifest: ModelManifest,
        route: Route,
    ) -> ChunkResult:
        ref = str(manifest.identity)
        try:
            outputs, path, fallback = await self.router.run(items, self.route_for(route))
        except OverloadedError as exc:
            if route != "auto":  # a pinned path is a question about that path: answer it
                raise
            return await self._degrade(items, samples, manifest, exc)
        for item, window, out in zip(items, samples, outputs, strict=True):
            self.cache.put(
                ref,
                window,
                manifest.sample_rate,
                from_bytes(out.embedding),
                from_bytes(out.logits) if out.logits is not None and item.logits else None,
            )
        return ChunkResult(outputs, [path] * len(items), [None] * len(items), fallback, path)

    async def _degrade(
        self,
        items: list[WindowItem],
        samples: list[np.ndarray],
        manifest: ModelManifest,
        cause: OverloadedError,
    ) -> ChunkResult:
        broken = isinstance(cause, NoModelPathError)
        n = len(items)
        outputs: list[WindowOutput | None] = [None] * n
        served: list[str] = ["-"] * n
        similarity: list[float | None] = [None] * n
        m = metrics()
        for strategy in self.strategies:
            pending = [i for i in range(n) if outputs[i] is None]
            if not pending:
                break
            if strategy == "quantized_model" and broken:
                done = await self._quantized(manifest, [items[i] for i in pending])
                for i, out in zip(pending, done or [], strict=False):
                    outputs[i], served[i] = out, QUANTIZED
            elif strategy == "cached_embedding":
                for i in pending:
                    hit = self.cache.get(str(manifest.identity), samples[i], manifest.sample_rate)
                    if hit is None:
                        continue
                    out = _substitute(manifest.identity, CACHE, hit.embedding)
                    if hit.logits is not None and items[i].logits:
                        out.logits = to_bytes(hit.logits)
                    outputs[i], served[i], similarity[i] = out, CACHE, round(hit.similarity, 6)
                    m.cache_hits.labels("exact" if hit.exact else "similar").inc()
            elif strategy == "deferred_queue":
                raise DeferRequest(cause.message)
            elif strategy == "zero_vector" and broken:
                zero = np.zeros(manifest.embedding_dim, dtype=np.float32)
                for i in pending:
                    outputs[i], served[i] = _substitute(manifest.identity, "none", zero), ZERO
        if any(o is None for o in outputs):
            raise cause
        for label in set(served):
            m.fallback_windows.labels(label).inc(served.count(label))
        log.warning(
            "served %d windows by fallback (%s) after: %s",
            n,
            ", ".join(sorted(set(served))),
            cause.message,
        )
        final = [o for o in outputs if o is not None]
        return ChunkResult(final, served, similarity, True, served[-1])

    async def _quantized(
        self, manifest: ModelManifest, items: list[WindowItem]
    ) -> list[WindowOutput] | None:
        ref = self.quantized.ref_for(manifest)
        if ref is None or not self.quantized.breaker.allow():
            return None
        quantized_items = [it.model_copy(update={"model": ref}) for it in items]
        try:
            outputs = await anyio.to_thread.run_sync(self.quantized.run_sync, ref, quantized_items)
        except Exception as exc:
            self.quantized.breaker.record_failure(str(exc))
            log.warning("quantized fallback %s failed: %s", ref, exc)
            return None
        self.quantized.breaker.record_success()
        return outputs
