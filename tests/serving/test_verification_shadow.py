"""Shadow verification, in process with the real models: the gateway's verifier side sends a
sampled request's windows to a real BirdNET model host (the Verifier service's own code,
without the HTTP hop) only after the request is done, through a bounded queue that drops
and counts what does not fit; the results reach the Prometheus metrics."""

from __future__ import annotations

import asyncio

import anyio
from prometheus_client import REGISTRY

from sevensense.artifacts.registry import Artifact, ModelRegistry
from sevensense.audio.pipeline import StreamStats
from sevensense.inference.engine import EmbeddingEngine, preprocess_config
from sevensense.serving.dispatch.birdnet_check import ChunkCheck, GatewayVerifier, PairTaker
from sevensense.serving.model_paths.router import ModelPath, new_breaker
from sevensense.serving.model_service.host import ModelHost, run_items
from sevensense.serving.model_service.rpc import (
    ModelServiceStatus,
    PrepareResult,
    WindowItem,
    WindowOutput,
    to_bytes,
)
from tests.conftest import audio, make_settings

YELLOWTHROAT = audio("labelled/common_yellowthroat.mp3")  # 2 Perch windows, 2 BirdNET windows
MODEL = ("perch-contract", "1.0.0")


def value(outcome: str) -> float:
    labels = {"model": MODEL[0], "version": MODEL[1], "outcome": outcome}
    return REGISTRY.get_sample_value("sevensense_verification_windows_total", labels) or 0.0


def agreement_count() -> float:
    labels = {"model": MODEL[0], "version": MODEL[1]}
    return REGISTRY.get_sample_value("sevensense_verification_agreement_count", labels) or 0.0


def test_shadow_runs_after_the_request_and_drops_when_full(
    registry: ModelRegistry, perch_artifact: Artifact
) -> None:
    settings = make_settings(verification__sample_rate=1.0, verification__queue_size=2)
    host = ModelHost("verifier", settings)
    host.start([settings.verification.model])
    calls: list[int] = []

    async def call(items: list[WindowItem]) -> list[WindowOutput]:
        calls.append(len(items))
        return await anyio.to_thread.run_sync(host.infer, items)

    async def probe() -> ModelServiceStatus:
        return host.status()

    async def prepare(ref: str) -> PrepareResult:
        return host.prepare(ref)

    path = ModelPath(
        "verifier", call, probe, prepare, new_breaker("verifier", settings.fallback.breaker)
    )
    verifier = GatewayVerifier(settings, registry, path)
    engine = EmbeddingEngine(settings)
    model = engine.sessions.get(perch_artifact)
    config = preprocess_config(settings, perch_artifact.manifest)

    async def one_request() -> None:
        """What the gateway does for a request: plan, window (with BirdNET's windows), embed,
        finish. Nothing of the shadow shows in the answer."""
        plan = verifier.plan(perch_artifact, requested=False)
        assert plan is not None and plan.shadow
        taker = PairTaker(YELLOWTHROAT, config, StreamStats(), plan)
        windows, fresh = taker.take(8)
        items = [
            WindowItem(model="perch-contract:1.0.0", samples=to_bytes(w.samples), logits=True)
            for w in windows
        ]
        outputs = run_items(engine, model, items).outputs
        shown = await verifier.finish(
            plan, MODEL, 5.0, list(zip(windows, outputs, strict=True)), [ChunkCheck(fresh)], taker
        )
        assert shown == (None, None)

    before = {k: value(k) for k in ("counted", "verifier_below_threshold", "dropped")}
    histogram_before = agreement_count()

    async def scenario() -> None:
        await one_request()
        # The request is answered; its BirdNET windows wait in the queue, not yet run.
        assert calls == [] and verifier.shadow.pending == 2 and verifier.shadow.free() == 0
        await one_request()  # the queue is full: this one is dropped and counted
        assert verifier.shadow._queue is not None
        await asyncio.wait_for(verifier.shadow._queue.join(), timeout=60)
        assert calls == [2] and verifier.shadow.pending == 0

    asyncio.run(scenario())
    assert value("dropped") - before["dropped"] == 2
    verified = (value("counted") - before["counted"]) + (
        value("verifier_below_threshold") - before["verifier_below_threshold"]
    )
    assert verified == 2
    assert agreement_count() - histogram_before == value("counted") - before["counted"] >= 1
