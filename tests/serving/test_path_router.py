"""GPU-first routing decisions, without a server: which path serves, when a failed path is
skipped, and how overload differs from breakage."""

from __future__ import annotations

import asyncio

import pytest
from bentoml.exceptions import ServiceUnavailable

from sevensense.artifacts.manifest import ModelIdentity
from sevensense.errors import NoModelPathError, OverloadedError
from sevensense.serving.model_paths.breaker import CircuitBreaker
from sevensense.serving.model_paths.router import ModelPath, PathRouter, failure_reason
from sevensense.serving.model_service.rpc import (
    ModelServiceStatus,
    PrepareResult,
    WindowItem,
    WindowOutput,
)
from sevensense.settings import BreakerSettings

IDENT = ModelIdentity(name="m", version="1", variant="base")


def path(
    name: str, behaviour: list[object], ready: bool = True, failures_to_open: int = 1
) -> tuple[ModelPath, list[int]]:
    """A path whose calls follow ``behaviour`` (an exception to raise or "ok")."""
    calls: list[int] = []

    async def call(items: list[WindowItem]) -> list[WindowOutput]:
        calls.append(len(items))
        step = behaviour.pop(0) if behaviour else "ok"
        if isinstance(step, BaseException):
            raise step
        return [
            WindowOutput(
                model=IDENT,
                provider=name,
                embedding=b"",
                batch_size=1,
                queue_ms=0,
                compute_ms=0,
                error=None if step == "ok" else str(step),
            )
            for _ in items
        ]

    async def probe() -> ModelServiceStatus:
        return ModelServiceStatus(path=name, ready=ready)  # type: ignore[arg-type]

    async def prepare(ref: str) -> PrepareResult:
        return PrepareResult(ref=ref)

    breaker = CircuitBreaker(
        name, BreakerSettings(failure_threshold=failures_to_open, recovery_timeout_s=60.0)
    )
    return ModelPath(name, call, probe, prepare, breaker), calls  # type: ignore[arg-type]


ITEMS = [WindowItem(model="m:1:base", samples=b"")] * 3


def run(router: PathRouter, route: str = "auto"):  # type: ignore[no-untyped-def]
    return asyncio.run(router.run(ITEMS, route))  # type: ignore[arg-type]


def test_gpu_serves_when_healthy() -> None:
    gpu, gpu_calls = path("gpu", [])
    cpu, cpu_calls = path("cpu", [])
    outputs, served, fallback = run(PathRouter([gpu, cpu]))
    assert (served, fallback, gpu_calls, cpu_calls) == ("gpu", False, [3], [])
    assert outputs[0].provider == "gpu"


def test_broken_gpu_is_skipped_while_its_breaker_is_open() -> None:
    gpu, gpu_calls = path("gpu", [ConnectionError("refused")])
    cpu, cpu_calls = path("cpu", [])
    router = PathRouter([gpu, cpu])
    assert run(router)[1:] == ("cpu", True)
    assert run(router)[1:] == ("cpu", True)
    assert gpu_calls == [3] and cpu_calls == [3, 3]  # second request did not try the GPU
    assert "unavailable" in str(gpu.describe()["reason"])
    assert gpu.describe()["breaker"]["state"] == "open"  # type: ignore[index]


def test_breaker_opens_only_after_consecutive_failures() -> None:
    boom = ConnectionError("refused")
    gpu, gpu_calls = path("gpu", [boom, boom, "ok", boom, boom, boom], failures_to_open=3)
    cpu, _ = path("cpu", [])
    router = PathRouter([gpu, cpu])
    served = [run(router)[1] for _ in range(7)]
    assert served == ["cpu", "cpu", "gpu", "cpu", "cpu", "cpu", "cpu"]
    assert len(gpu_calls) == 6  # the success reset the count; the 7th request skipped it


def test_overloaded_gpu_is_retried_next_time() -> None:
    gpu, gpu_calls = path("gpu", [ServiceUnavailable("shed")])
    cpu, _ = path("cpu", [])
    router = PathRouter([gpu, cpu])
    assert run(router)[1:] == ("cpu", True)
    assert run(router)[1:] == ("gpu", False)
    assert gpu_calls == [3, 3]


def test_window_errors_fail_over_and_unready_paths_are_not_called() -> None:
    gpu, _gpu_calls = path("gpu", ["unknown version"])
    cpu, _ = path("cpu", [])
    assert run(PathRouter([gpu, cpu]))[1] == "cpu"
    cold, cold_calls = path("gpu", [], ready=False)
    assert run(PathRouter([cold, path("cpu", [])[0]]))[1:] == ("cpu", True)
    assert cold_calls == []


def test_no_path_left_is_a_503_with_the_reasons() -> None:
    gpu, _ = path("gpu", [], ready=False)
    cpu, _ = path("cpu", [ConnectionError("down")])
    with pytest.raises(NoModelPathError) as info:
        run(PathRouter([gpu, cpu]))
    assert "gpu" in info.value.message and "cpu: unavailable" in info.value.message
    busy, _ = path("cpu", [ServiceUnavailable("shed")])
    with pytest.raises(OverloadedError):
        run(PathRouter([busy]))
    forced, _ = path("gpu", [], ready=False)
    with pytest.raises(NoModelPathError):
        run(PathRouter([forced, path("cpu", [])[0]]), route="gpu")


def test_failure_reasons() -> None:
    assert failure_reason(ServiceUnavailable("x")) == "overloaded"
    assert failure_reason(ConnectionRefusedError()) == "unavailable"
    assert failure_reason(TimeoutError()) == "unavailable"
    assert failure_reason(ValueError("bad")) == "error"


def test_a_slow_probe_keeps_a_ready_path_and_never_readies_a_new_one() -> None:
    """Busy is not broken: a model service deep in a long batch answers its probe late, and
    that alone must not send requests to the next path (CI once saw /detect served by the
    int8 fallback that way)."""
    slow = {"on": False}
    gpu, gpu_calls = path("gpu", [])
    answer = gpu.probe

    async def probe() -> ModelServiceStatus:
        if slow["on"]:
            await asyncio.sleep(1.0)
        return await answer()

    gpu.probe = probe
    cpu, _ = path("cpu", [])
    router = PathRouter([gpu, cpu], probe_every_s=0.0, probe_timeout_s=0.05)
    assert run(router)[1:] == ("gpu", False)
    slow["on"] = True
    assert run(router)[1:] == ("gpu", False)
    assert gpu_calls == [3, 3]
    cold = PathRouter([path("gpu", [])[0], cpu], probe_every_s=0.0, probe_timeout_s=0.05)
    cold.paths[0].probe = probe
    assert run(cold)[1:] == ("cpu", True)
    assert "probe timed out" in str(cold.paths[0].describe()["reason"])


def test_one_dropped_probe_of_a_ready_path_is_retried() -> None:
    gpu, _ = path("gpu", [])
    answer = gpu.probe
    drops = [ConnectionResetError("idle connection closed")]

    async def probe() -> ModelServiceStatus:
        if drops:
            raise drops.pop()
        return await answer()

    router = PathRouter([gpu, path("cpu", [])[0]], probe_every_s=0.0)
    assert run(router)[1] == "gpu"
    gpu.probe = probe
    assert run(router)[1:] == ("gpu", False) and not drops
    drops.extend([ConnectionResetError("down"), ConnectionResetError("still down")])
    assert run(router)[1:] == ("cpu", True)


def test_a_dropped_connection_is_tried_once_more_on_the_same_path() -> None:
    class ServerDisconnectedError(Exception):
        pass

    gpu, gpu_calls = path("gpu", [ServerDisconnectedError("closed while idle")])
    cpu, cpu_calls = path("cpu", [])
    assert run(PathRouter([gpu, cpu]))[1:] == ("gpu", False)
    assert gpu_calls == [3, 3] and cpu_calls == []
    assert gpu.breaker.snapshot()["state"] == "closed"
