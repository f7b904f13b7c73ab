"""GPU first, CPU fallback: which model service takes a chunk of windows.

A path is skipped while its last readiness probe said no, or for ``retry_s`` after it
failed outright (connection refused, 5xx); an overloaded path (the batcher shed the
request with 503) is not put aside, because overload passes in milliseconds. The chunk that
failed is retried on the next path, so a client never sees the GPU service's trouble, only
``fallback: true`` and the provider that really served. Issue 4 turns the cool-down into a
full circuit breaker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from sevensense.errors import NoModelPathError, OverloadedError, SevensenseError
from sevensense.serving.metrics import metrics
from sevensense.serving.wire import (
    ModelServiceStatus,
    PathName,
    PrepareResult,
    Route,
    WindowItem,
    WindowOutput,
)

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


@dataclass
class ModelPath:
    name: PathName
    call: Call
    probe: Probe
    prepare: Prepare
    retry_s: float = 10.0
    status: ModelServiceStatus | None = None
    probed_at: float = float("-inf")
    down_until: float = float("-inf")
    last_error: str | None = None

    def usable(self, now: float) -> bool:
        return self.status is not None and self.status.ready and now >= self.down_until

    def describe(self) -> dict[str, object]:
        now = time.monotonic()
        return {
            "ready": self.usable(now),
            "reason": None if self.usable(now) else self.last_error or self._status_reason(),
            "provider": self.status.provider if self.status else None,
            "loaded": self.status.loaded if self.status else [],
        }

    def _status_reason(self) -> str:
        if self.status is None:
            return "not probed yet"
        return self.status.reason or "not ready"


@dataclass
class PathRouter:
    paths: Sequence[ModelPath]
    probe_every_s: float = 5.0
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
            path.status = await asyncio.wait_for(path.probe(), timeout=5.0)
            if path.status.ready:
                path.last_error = None
        except Exception as exc:
            path.status = ModelServiceStatus(
                path=path.name, ready=False, reason=f"{failure_reason(exc)}: {exc}"[:300]
            )
        path.probed_at = time.monotonic()
        metrics().path_ready.labels(path.name).set(1 if path.usable(path.probed_at) else 0)

    def any_ready(self) -> bool:
        now = time.monotonic()
        return any(p.usable(now) for p in self.paths)

    def get(self, name: str) -> ModelPath | None:
        return next((p for p in self.paths if p.name == name), None)

    async def run(
        self, items: list[WindowItem], route: Route
    ) -> tuple[list[WindowOutput], PathName, bool]:
        """Outputs, the path that served, and whether it was a fallback."""
        await self.refresh()
        candidates = [p for p in self.paths if route in ("auto", p.name)]
        reasons: list[str] = []
        preferred = True
        for i, path in enumerate(candidates):
            if not path.usable(time.monotonic()):
                reasons.append(f"{path.name}: {path.describe()['reason']}")
                nxt = candidates[i + 1].name if i + 1 < len(candidates) else "none"
                metrics().fallbacks.labels(path.name, nxt, "unready").inc()
                preferred = False
                continue
            try:
                outputs = await path.call(items)
                failed = [o.error for o in outputs if o.error]
                if failed:
                    raise PathFailedError(f"{len(failed)} windows failed: {failed[0]}")
            except Exception as exc:
                reason = failure_reason(exc)
                if reason != "overloaded":
                    path.down_until = time.monotonic() + path.retry_s
                    path.last_error = f"{reason}: {exc}"[:300]
                nxt = candidates[i + 1].name if i + 1 < len(candidates) else "none"
                metrics().fallbacks.labels(path.name, nxt, reason).inc()
                log.warning("%s path failed (%s): %s", path.name, reason, exc)
                reasons.append(f"{path.name}: {reason}")
                preferred = False
                continue
            return outputs, path.name, not preferred
        detail = "; ".join(reasons) or "no path configured for this route"
        if any("overloaded" in r for r in reasons):
            raise OverloadedError(
                f"no model path can take this now; retry shortly ({detail})", retry_after_s=1.0
            )
        raise NoModelPathError(f"no model path can serve now ({detail})", retry_after_s=5.0)
