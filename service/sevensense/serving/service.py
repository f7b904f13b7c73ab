"""The BentoML service graph: ``Entry`` (partner API) → ``GpuModel`` | ``CpuModel``, and
``Verifier`` (BirdNET v2.4, for ``verify=true`` and shadow verification).

``bentoml serve sevensense.serving.service:Entry`` starts all three on one host; in
production each runs as its own ECS service and the entry reaches the model services at
``SEVENSENSE_SERVING__GPU_URL`` / ``SEVENSENSE_SERVING__CPU_URL`` (then BentoML starts only
the entry). This module is the only one that imports BentoML: the engine, the gateway and
the API are plain Python, usable and tested without a server.
"""

from __future__ import annotations

import logging
import os
from typing import Any, cast

import bentoml
from bentoml._internal.configuration.containers import BentoMLContainer
from starlette.applications import Starlette
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from sevensense.jobs.store import JobStore
from sevensense.jobs.submit import Deferrer
from sevensense.queues import open_deferred_queue
from sevensense.serving import lifecycle
from sevensense.serving.access.keys import KeyStore, ensure_dev_key
from sevensense.serving.access.ratelimit import RateLimiter
from sevensense.serving.dispatch.birdnet_check import GatewayVerifier
from sevensense.serving.dispatch.gateway import Gateway
from sevensense.serving.http import server as http_server
from sevensense.serving.http.app import build_app
from sevensense.serving.http.context import STATE_NAME, ApiContext, AppParts
from sevensense.serving.http.outer import JsonForUnmatched, ReadyDetail
from sevensense.serving.model_paths.router import ModelPath, PathRouter, new_breaker
from sevensense.serving.model_service.host import ModelHost
from sevensense.serving.model_service.pending import PENDING, CountArrivals
from sevensense.serving.model_service.rpc import (
    ModelServiceStatus,
    PathName,
    PrepareResult,
    WindowItem,
    WindowOutput,
)
from sevensense.serving.rollout.activation import RolloutAdmin
from sevensense.serving.rollout.resolver import ModelResolver
from sevensense.serving.rollout.weights import make_store
from sevensense.serving.stream.route import mount_stream
from sevensense.serving.telemetry import scaling, tracing
from sevensense.serving.tenant_index import SimilarityService
from sevensense.settings import Settings, cpu_layout, load_settings
from sevensense.storage.objects import open_store

log = logging.getLogger("sevensense.serving")

SETTINGS: Settings = load_settings()
SERVING = SETTINGS.serving
# Before BentoML builds uvicorn's config: slow request headers are cut (http_server.py).
http_server.install(SERVING.front_door.header_timeout_s, SERVING.stream.send_buffer_bytes)
lifecycle.install(SERVING.stream.drain_s)  # SIGTERM drains the entry (lifecycle.py)

# Called services: without these, BentoML recycles the caller's connection pool every 100
# requests and in-flight calls fail under load (FACTS.md, measured).
_CONNECTION: dict[str, Any] = {"max_requests": 1_000_000, "max_age": 3600.0}


def _tracing() -> dict[str, Any]:
    if SERVING.tracing_exporter == "none":
        return {"sample_rate": 0.0}
    config: dict[str, Any] = {
        "exporter_type": "otlp",
        "sample_rate": SERVING.tracing_sample_rate,
        "otlp": {"protocol": "http", "endpoint": SERVING.otlp_endpoint},
    }
    return config


def _model_service(path: PathName, name: str) -> Any:
    """GPU and CPU services share one implementation; only resources and SLOs differ."""
    gpu = path == "gpu"

    class ModelService:
        def __init__(self) -> None:
            tracing.install(BentoMLContainer.tracer_provider.get())
            self.host = ModelHost(path, SETTINGS)
            self.host.start(ModelResolver(SETTINGS, make_store(SERVING)).served_refs())
            self.scaling = scaling.start(
                SERVING.scaling_metrics, lambda: scaling.model_sampler(PENDING.count)
            )

        @bentoml.api(
            batchable=True,
            max_batch_size=SERVING.gpu_max_batch_size if gpu else SERVING.cpu_max_batch_size,
            max_latency_ms=SERVING.gpu_max_latency_ms if gpu else SERVING.cpu_max_latency_ms,
        )
        def infer(self, items: list[WindowItem]) -> list[WindowOutput]:
            try:
                return self.host.infer(items)
            finally:
                PENDING.answered(items)

        @bentoml.api
        def prepare(self, ref: str) -> PrepareResult:
            try:
                return self.host.prepare(ref)
            except Exception as exc:
                return PrepareResult(
                    ref=ref,
                    error=getattr(exc, "message", None) or str(exc),
                    error_code=getattr(exc, "code", "internal_error"),
                )

        @bentoml.api
        async def status(self) -> ModelServiceStatus:
            # async: on the event loop, not queued behind a long batch in the thread pool
            return self.host.status()

        def __is_ready__(self) -> bool:
            return self.host.ready

    ModelService.__name__ = ModelService.__qualname__ = name
    config: dict[str, Any] = {
        "workers": 1 if gpu else cpu_layout(SERVING)[0],
        "runner_connection": _CONNECTION,
        "traffic": {"timeout": SERVING.request_timeout_s},
        "tracing": _tracing(),
    }
    if gpu:
        config["resources"] = {"gpu": 1}
    service = bentoml.service(**config)(ModelService)
    service.add_asgi_middleware(CountArrivals)
    return service


GpuModel = _model_service("gpu", "GpuModel")
CpuModel = _model_service("cpu", "CpuModel")
VERIFICATION = SETTINGS.verification


def _yield_cpu(priority: str, nice: int) -> None:
    """Shadow verification must not take cycles from /embed's models on a shared host:
    SCHED_IDLE (Linux) runs this process and the ONNX Runtime threads it starts later only
    when nothing else is runnable; a plain nice still takes about a tenth of a core."""
    if priority == "idle" and hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    elif priority in ("idle", "nice"):
        os.nice(nice)


class Verifier:
    """BirdNET v2.4 for verification (ADR-007 §7): its own processes, adaptive batching,
    readiness and (at the entry) circuit breaker; never an embedding path."""

    def __init__(self) -> None:
        tracing.install(BentoMLContainer.tracer_provider.get())
        if VERIFICATION.provider == "cpu":
            _yield_cpu(VERIFICATION.cpu_priority, VERIFICATION.nice)
        self.host = ModelHost("verifier", SETTINGS)
        self.host.start([VERIFICATION.model])

    @bentoml.api(
        batchable=True,
        max_batch_size=VERIFICATION.max_batch_size,
        max_latency_ms=VERIFICATION.max_latency_ms,
    )
    def infer(self, items: list[WindowItem]) -> list[WindowOutput]:
        return self.host.infer(items)

    @bentoml.api
    def prepare(self, ref: str) -> PrepareResult:
        return self.host.prepare(ref)

    @bentoml.api
    async def status(self) -> ModelServiceStatus:
        return self.host.status()

    def __is_ready__(self) -> bool:
        return self.host.ready


_verifier_config: dict[str, Any] = {
    "workers": VERIFICATION.workers,
    "runner_connection": _CONNECTION,
    "traffic": {"timeout": SERVING.request_timeout_s},
    "tracing": _tracing(),
}
if VERIFICATION.provider == "gpu":
    _verifier_config["resources"] = {"gpu": 1}
Verifier = bentoml.service(**_verifier_config)(Verifier)  # type: ignore[misc]


class _LateApp(Starlette):
    """The FastAPI app is built at import, but its state only in the worker; BentoML mounts
    a Starlette app passively (by its routes), so this forwards both. The two faces meet
    here: ``WS /stream`` is mounted on the app that serving/http built, and both share one
    similarity index (what a stream indexes, ``/search`` finds)."""

    def __init__(self) -> None:
        super().__init__()
        similarity = SimilarityService(SETTINGS)
        self.inner = build_app(SETTINGS, self.context, similarity)
        mount_stream(self.inner, SETTINGS, self.stream_parts, similarity)
        self._context: ApiContext | None = None

    def context(self) -> ApiContext:
        if self._context is None:
            raise RuntimeError("the entry service has not started")
        return self._context

    def stream_parts(self) -> tuple[Gateway, KeyStore, RateLimiter]:
        ctx = self.context()
        return ctx.gateway, ctx.keys, ctx.limiter

    @property
    def routes(self) -> list[BaseRoute]:
        return self.inner.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.inner(scope, receive, send)


API = _LateApp()


def _dependency(service: Any, url: str | None) -> Any:
    return bentoml.depends(service, url=url) if url else bentoml.depends(service)


def _path(name: PathName, proxy: Any) -> ModelPath:
    client = proxy.to_async

    async def call(items: list[WindowItem]) -> list[WindowOutput]:
        return [_as(WindowOutput, o) for o in await client.infer(items)]

    async def probe() -> ModelServiceStatus:
        return _as(ModelServiceStatus, await client.status())

    async def prepare(ref: str) -> PrepareResult:
        return _as(PrepareResult, await client.prepare(ref=ref))

    return ModelPath(name, call, probe, prepare, new_breaker(name, SETTINGS.fallback.breaker))


def _as(model: Any, value: Any) -> Any:
    """Remote (JSON) dependencies answer with dicts, local (pickle) ones with the models."""
    return value if isinstance(value, model) else model.model_validate(value)


@bentoml.service(
    workers=1,
    runner_probe={"enabled": False},  # our /readyz: ready while any model path can serve
    traffic={"timeout": SERVING.request_timeout_s + 5},
    tracing=_tracing(),
)
@bentoml.asgi_app(API, path="/")
class Entry:
    gpu = _dependency(GpuModel, SERVING.gpu_url) if SERVING.gpu_enabled else None
    cpu = _dependency(CpuModel, SERVING.cpu_url)
    verifier = _dependency(Verifier, VERIFICATION.url) if VERIFICATION.enable_birdnet else None

    def __init__(self) -> None:
        tracing.install(BentoMLContainer.tracer_provider.get())
        paths = [_path("cpu", self.cpu)]
        if self.gpu is not None:
            paths.insert(0, _path("gpu", self.gpu))
        self.router = PathRouter(paths, probe_every_s=SERVING.probe_interval_s)
        jobs = JobStore(open_store(SETTINGS.payload_uri()))
        # agile jobs use the queue whatever the fallback chain; an SQS one needs its URL
        q, defers = SETTINGS.queue, "deferred_queue" in SETTINGS.fallback.strategies
        queue = None
        if defers or q.backend != "sqs" or q.deferred_queue_url:
            queue = Deferrer(jobs, open_deferred_queue(SETTINGS))
        deferrer = queue if defers else None
        resolver = ModelResolver(SETTINGS, make_store(SERVING))
        checker = GatewayVerifier(
            SETTINGS,
            resolver.registry,
            _path("verifier", self.verifier) if self.verifier is not None else None,
        )
        self.gateway = Gateway(SETTINGS, self.router, resolver, deferrer, checker)
        self.gateway.warm_fallbacks()
        dev_key = ensure_dev_key(SERVING) if SERVING.auth_required else None
        if dev_key:
            log.info("local dev API key (also in %s/dev-api-key): %s", SERVING.state_dir, dev_key)
        API._context = ApiContext(
            gateway=self.gateway,
            admin=RolloutAdmin(resolver, self.router),
            jobs=jobs,
            keys=KeyStore.from_settings(SERVING),
            limiter=RateLimiter.from_settings(SERVING),
            ready=self.__is_ready__,
            queue=queue,
        )
        parts = cast(AppParts, getattr(API.inner.state, STATE_NAME))
        self.scaling = scaling.start(
            SERVING.scaling_metrics, lambda: scaling.entry_sampler(lambda: parts.inflight.count)
        )

    async def __is_ready__(self) -> bool:
        if lifecycle.draining():  # a stopping task leaves the load balancer's rotation
            return False
        await self.router.refresh()
        return self.gateway.readiness()[0]


async def _ready_detail() -> tuple[bool, dict[str, Any]]:
    gateway = API.context().gateway
    await gateway.router.refresh()
    if gateway.verifier.router is not None:
        await gateway.verifier.router.refresh()
    return gateway.readiness()


cast(Any, Entry).add_asgi_middleware(JsonForUnmatched)  # a bentoml.Service once decorated
cast(Any, Entry).add_asgi_middleware(ReadyDetail, detail=_ready_detail)
