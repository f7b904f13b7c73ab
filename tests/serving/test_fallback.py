"""The fallback chain with real models: a working path is a real ModelHost (ORT), the
quantized strategy runs the int8 artifact built at set-up, and a broken path is one whose
calls fail as a dead model service's do (connection refused). The same chain on a real
server is tested in test_service_resilience.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sevensense.artifacts.registry import ModelRegistry
from sevensense.audio.pipeline import prepare_windows
from sevensense.errors import NoModelPathError, OverloadedError
from sevensense.serving.model_paths.breaker import CircuitBreaker
from sevensense.serving.model_paths.fallback import DeferRequest, FallbackChain
from sevensense.serving.model_paths.router import ModelPath, PathRouter
from sevensense.serving.model_service.host import ModelHost
from sevensense.serving.model_service.rpc import (
    ModelServiceStatus,
    PrepareResult,
    WindowItem,
    WindowOutput,
    from_bytes,
    to_bytes,
)
from sevensense.settings import BreakerSettings, FallbackStrategy, Settings
from tests.conftest import audio, cosine, make_settings

REF = "birdnet-v2.4:2.4.0:base"


class Switchable:
    """A model path backed by a real ModelHost that can be made to fail like a dead
    service (ConnectionRefusedError) or an overloaded one (503)."""

    def __init__(self, worker: ModelHost) -> None:
        self.worker = worker
        self.mode = "ok"
        self.calls = 0

    async def call(self, items: list[WindowItem]) -> list[WindowOutput]:
        self.calls += 1
        if self.mode == "down":
            raise ConnectionRefusedError("connection refused")
        if self.mode == "busy":
            from bentoml.exceptions import ServiceUnavailable

            raise ServiceUnavailable("shed")
        return await asyncio.to_thread(self.worker.infer, items)

    async def probe(self) -> ModelServiceStatus:
        return ModelServiceStatus(path="cpu", ready=True)

    async def prepare(self, ref: str) -> PrepareResult:
        return PrepareResult(ref=ref)


@pytest.fixture(scope="module")
def settings(serving_models: Path) -> Settings:
    s = make_settings()
    s.models_dir = serving_models
    return s


@pytest.fixture(scope="module")
def worker(settings: Settings) -> ModelHost:
    w = ModelHost("cpu", settings)
    w.start([REF])
    return w


@pytest.fixture(scope="module")
def windows(worker: ModelHost) -> list[np.ndarray]:
    config = worker.engine.preprocess_config(worker.engine.model(REF))
    source = audio("soundscape_birdnet_120s_48k.flac")
    return [w.samples for w in prepare_windows(source, config)][:6]


def chain(
    settings: Settings, worker: ModelHost, strategies: list[FallbackStrategy], **cache: Any
) -> tuple[FallbackChain, Switchable]:
    s = settings.model_copy(deep=True)
    s.fallback.strategies = strategies
    s.fallback.breaker = BreakerSettings(failure_threshold=2, recovery_timeout_s=60)
    for key, value in cache.items():
        setattr(s.fallback, key, value)
    switch = Switchable(worker)
    path = ModelPath("cpu", switch.call, switch.probe, switch.prepare)
    path.breaker = CircuitBreaker("cpu", s.fallback.breaker)
    return FallbackChain(s, PathRouter([path]), ModelRegistry(s.models_dir)), switch


def run(c: FallbackChain, windows: list[np.ndarray], route: str = "auto") -> Any:
    items = [WindowItem(model=REF, samples=to_bytes(w), logits=True) for w in windows]
    manifest = ModelRegistry(c.settings.models_dir).resolve(REF).manifest
    return asyncio.run(c.run(items, windows, manifest, route))  # type: ignore[arg-type]


def test_quantized_serves_when_the_path_is_down(
    settings: Settings, worker: ModelHost, windows: list[np.ndarray]
) -> None:
    c, switch = chain(settings, worker, ["cpu", "quantized_model"])
    base = run(c, windows)
    assert base.served == ["cpu"] * 6 and not base.fallback
    switch.mode = "down"
    degraded = run(c, windows)
    assert degraded.served == ["quantized"] * 6 and degraded.fallback
    assert {o.model.variant for o in degraded.outputs} == {"quantized"}
    for a, b in zip(base.outputs, degraded.outputs, strict=True):
        assert cosine(from_bytes(a.embedding), from_bytes(b.embedding)) > 0.9
        assert b.logits is not None
    run(c, windows)
    assert c.router.paths[0].breaker.state.value == "open"  # 2 failures: threshold
    calls = switch.calls
    assert run(c, windows).served == ["quantized"] * 6
    assert switch.calls == calls  # open: the dead path is not even tried


def test_cache_then_zero_vector_for_unseen_windows(
    settings: Settings, worker: ModelHost, windows: list[np.ndarray]
) -> None:
    c, switch = chain(settings, worker, ["cached_embedding", "zero_vector"])
    first = run(c, windows[:3])
    switch.mode = "down"
    mixed = run(c, windows)
    assert mixed.served == ["cache"] * 3 + ["zero_vector"] * 3
    assert mixed.similarity[:3] == [1.0] * 3
    for a, b in zip(first.outputs, mixed.outputs[:3], strict=True):
        assert a.embedding == b.embedding and a.logits == b.logits
    assert all(not from_bytes(o.embedding).any() for o in mixed.outputs[3:])


def test_near_duplicate_cache_serves_another_codec(
    settings: Settings, worker: ModelHost, windows: list[np.ndarray]
) -> None:
    c, switch = chain(settings, worker, ["cached_embedding"], cache_similarity=0.95)
    first = run(c, windows)
    config = worker.engine.preprocess_config(worker.engine.model(REF))
    mp3 = [w.samples for w in prepare_windows(audio("soundscape_birdnet_120s_48k.mp3"), config)]
    switch.mode = "down"
    served = run(c, mp3[:6])
    assert served.served == ["cache"] * 6
    assert all(0.95 <= s < 1.0 for s in served.similarity)
    assert [o.embedding for o in served.outputs] == [o.embedding for o in first.outputs]


def test_deferred_queue_and_exhausted_chains(
    settings: Settings, worker: ModelHost, windows: list[np.ndarray]
) -> None:
    c, switch = chain(settings, worker, ["cached_embedding", "deferred_queue", "zero_vector"])
    switch.mode = "down"
    with pytest.raises(DeferRequest):
        run(c, windows)  # cache is empty: the request goes to the queue, not to zeros
    c, switch = chain(settings, worker, ["cached_embedding"])
    switch.mode = "down"
    with pytest.raises(NoModelPathError):
        run(c, windows)


def test_overload_never_degrades_to_quantized_or_zeros(
    settings: Settings, worker: ModelHost, windows: list[np.ndarray]
) -> None:
    c, switch = chain(settings, worker, ["quantized_model", "cached_embedding", "zero_vector"])
    run(c, windows[:2])
    switch.mode = "busy"
    with pytest.raises(OverloadedError) as info:
        run(c, windows)
    assert not isinstance(info.value, NoModelPathError)
    assert run(c, windows[:2]).served == ["cache", "cache"]  # the cache still may answer
    assert c.router.paths[0].breaker.state.value == "closed"  # overload is not breakage


def test_a_pinned_route_is_not_degraded(
    settings: Settings, worker: ModelHost, windows: list[np.ndarray]
) -> None:
    c, switch = chain(settings, worker, ["quantized_model", "zero_vector"])
    switch.mode = "down"
    with pytest.raises(NoModelPathError):
        run(c, windows, route="cpu")
    assert run(c, windows, route="auto").served == ["quantized"] * 6
