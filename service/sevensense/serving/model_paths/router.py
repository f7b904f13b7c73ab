"""GPU first, CPU fallback: which model service takes a chunk of windows.

A path is skipped while its last readiness probe said no, or while its circuit breaker is
open after repeated failures (connection refused, 5xx, per-window errors). An overloaded
path (the batcher shed the request with 503) counts neither way: overload passes in
milliseconds. The chunk that failed is retried on the next path, so a client never sees the
GPU service's trouble, only the path that really served; when no path can serve, the
gateway's fallback chain (``fallback.py``) takes over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from sevensense.errors import NoModelPathError, OverloadedError, SevensenseError
from sevensense.serving.model_paths.breaker import STATE_VALUE, BreakerState, CircuitBreaker
from sevensense.serving.model_service.rpc import (
    ModelServiceStatus,
    PathName,
    PrepareResult,
    WindowItem,
    WindowOutput,
)
from sevensense.serving.schemas import Route
from sevensense.serving.telemetry.metrics import metrics
from sevensense.settings import BreakerSettings

log = logging.getLogger(__name__)

Call = Callable[[list[WindowItem]], Awaitable[list[WindowOutput]]]
Probe = Callable[[], Awaitable[ModelServiceStatus]]
Prepare = Callable[[str], Awaitable[PrepareResult]]


class PathFailedError(SevensenseError):
    """A model service answered with per-window errors for a whole chunk."""

    code = "model_path_failed"
    http_status = 503


def failure_reason(exc: BaseException) -> str:
    """Overload is told apart from breakage by the 503 the batcher sends when it sheds load."""
    status = getattr(exc, "error_code", None)
    code = int(status) if status is not None else getattr(exc, "status_code", None)
    if code in (429, 503):
        return "overloaded"
    if isinstance(exc, (ConnectionError, OSError, asyncio.TimeoutError)):
        return "unavailable"
    name = type(exc).__name__.lower()
    if "connect" in name or "disconnect" in name or "timeout" in name:
        return "unavailable"
    return "error"


def record_transition(name: str, before: BreakerState, after: BreakerState) -> None:
    """Breaker listener: state gauge, transition counter and a log line."""
    m = metrics()
    m.breaker_state.labels(name).set(STATE_VALUE[after])
    m.breaker_transitions.labels(name, before.value, after.value).inc()
    level = logging.WARNING if after is BreakerState.OPEN else logging.INFO
    log.log(level, "circuit breaker %s: %s -> %s", name, before.value, after.value)


def new_breaker(name: str, config: BreakerSettings) -> CircuitBreaker:
    metrics().breaker_state.labels(name).set(0)
    return CircuitBreaker(name, config, listener=record_transition)


@dataclass
class ModelPath:
    name: PathName
    call: Call
    probe: Probe
    prepare: Prepare
    breaker: CircuitBreaker = field(default_factory=lambda: CircuitBreaker("path"))
    status: ModelServiceStatus | None = None
    probed_at: float = float("-inf")

    def usable(self) -> bool:
        return self.status is not None and self.status.ready and self.breaker.would_allow()

    def describe(self) -> dict[str, object]:
        usable = self.usable()
        return {
            "ready": usable,
            "reason": None if usable else self._reason(),
            "provider": self.status.provider if self.status else None,
            "loaded": self.status.loaded if self.status else [],
            "driver": self.status.driver if self.status else None,
            "breaker": self.breaker.snapshot(),
        }

    def _reason(self) -> str:
        if self.status is None:
            return "not probed yet"
        if not self.status.ready:
            return self.status.reason or "not ready"
        snap = self.breaker.snapshot()
        return f"circuit {snap['state']} after: {snap['last_error']}"


@dataclass
class PathRouter:
    paths: Sequence[ModelPath]
    probe_every_s: float = 5.0
    probe_timeout_s: float = 5.0
    _probe_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def refresh(self, force: bool = False) -> None:
        """Probe readiness at most every ``probe_every_s``; concurrent callers share one probe."""
        async with self._probe_lock:
            now = time.monotonic()
            stale = [p for p in self.paths if force or now - p.probed_at >= self.probe_every_s]
            if stale:
                await asyncio.gather(*(self._probe(p) for p in stale))

    async def _probe(self, path: ModelPath) -> None:
        try:
            path.status = await self._ask(path)
        except TimeoutError:
            if path.status is None or not path.status.ready:
                path.status = ModelServiceStatus(
                    path=path.name, ready=False, reason="unavailable: readiness probe timed out"
                )
            else:
                # A slow answer from a path that was ready means busy, not broken; its
                # calls (and the breaker) tell which.
                log.info("%s path: readiness probe slow; kept ready", path.name)
        except Exception as exc:
            path.status = ModelServiceStatus(
                path=path.name, ready=False, reason=f"{failure_reason(exc)}: {exc}"[:300]
            )
        path.probed_at = time.monotonic()
        metrics().path_ready.labels(path.name).set(1 if path.usable() else 0)

    @staticmethod
    async def _call(path: ModelPath, items: list[WindowItem]) -> list[WindowOutput]:
        """Windows are idempotent: a pooled connection dropped under the call (not a
        refusal, a timeout or overload) is tried once more before it counts against the
        breaker."""
        try:
            return await path.call(items)
        except (ConnectionResetError, BrokenPipeError) as exc:
            dropped: Exception = exc
        except Exception as exc:
            if "disconnect" not in type(exc).__name__.lower():
                raise
            dropped = exc
        log.info("%s path: connection dropped (%s); tried once more", path.name, dropped)
        return await path.call(items)

    async def _ask(self, path: ModelPath) -> ModelServiceStatus:
        """One retry for a path that was ready: a pooled connection the service closed while
        idle fails once, and must not send the next requests down the fallback chain."""
        was_ready = path.status is not None and path.status.ready
        try:
            return await asyncio.wait_for(path.probe(), timeout=self.probe_timeout_s)
        except TimeoutError:
            raise
        except Exception:
            if not was_ready:
                raise
            return await asyncio.wait_for(path.probe(), timeout=self.probe_timeout_s)

    def any_ready(self) -> bool:
        return any(p.usable() for p in self.paths)

    def get(self, name: str) -> ModelPath | None:
        return next((p for p in self.paths if p.name == name), None)

    async def run(
        self, items: list[WindowItem], route: Route
    ) -> tuple[list[WindowOutput], PathName, bool]:
        """Outputs, the path that served, and whether it was a fallback.

        Raises :class:`OverloadedError` when every path that could serve shed the load, and
        :class:`NoModelPathError` when none can serve at all (unready, open, failing).
        """
        await self.refresh()
        candidates = [p for p in self.paths if route in ("auto", p.name)]
        reasons: list[str] = []
        for i, path in enumerate(candidates):
            nxt = candidates[i + 1].name if i + 1 < len(candidates) else "none"
            if path.status is None or not path.status.ready:
                reasons.append(f"{path.name}: {path.describe()['reason']}")
                metrics().fallbacks.labels(path.name, nxt, "unready").inc()
                continue
            if not path.breaker.allow():
                reasons.append(f"{path.name}: circuit open")
                metrics().fallbacks.labels(path.name, nxt, "circuit_open").inc()
                continue
            try:
                outputs = await self._call(path, items)
                failed = [o.error for o in outputs if o.error]
                if failed:
                    raise PathFailedError(f"{len(failed)} windows failed: {failed[0]}")
            except asyncio.CancelledError:
                path.breaker.release()
                raise
            except Exception as exc:
                reason = failure_reason(exc)
                if reason == "overloaded":
                    path.breaker.release()
                else:
                    path.breaker.record_failure(f"{reason}: {exc}")
                metrics().fallbacks.labels(path.name, nxt, reason).inc()
                log.warning("%s path failed (%s): %s", path.name, reason, exc)
                reasons.append(f"{path.name}: {reason}")
                continue
            path.breaker.record_success()
            return outputs, path.name, path is not candidates[0]
        detail = "; ".join(reasons) or "no path configured for this route"
        if any(r.endswith(": overloaded") for r in reasons):
            raise OverloadedError(
                f"no model path can take this now; retry shortly ({detail})", retry_after_s=1.0
            )
        raise NoModelPathError(f"no model path can serve now ({detail})", retry_after_s=5.0)
