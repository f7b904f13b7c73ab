"""Stopping an entry task without losing work: SIGTERM on scale-in or a deploy.

uvicorn's own shutdown stops accepting connections, then closes every WebSocket at once with
1012 and waits, without bound, for HTTP requests to finish. That would cut each live stream
mid-window with nothing to resume from elsewhere. So the shutdown is wrapped: once the
listening sockets are closed, the task is *draining* (``/readyz`` answers 503, so health
checks take it out of rotation): new uploads get 503 ``draining``
(with ``Retry-After`` and ``Connection: close``), new streams 4503, and the drain hooks run
(the stream endpoint answers every window already cut, sends each stream a ``reconnect``
with its resume token, and closes it with 1012); then uvicorn's shutdown finishes the
uploads in flight. The whole stays within ``serving.stream.drain_s``: past it, what is left
is cancelled and the process exits. The ECS stop timeout must be longer than that bound
(docs/streams.md gives the numbers, with the ALB's deregistration delay).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable

import uvicorn

log = logging.getLogger(__name__)

DrainHook = Callable[[float], Awaitable[object]]

_hooks: list[DrainHook] = []
_state = {"draining": False}


def draining() -> bool:
    return _state["draining"]


def on_drain(hook: DrainHook) -> None:
    """``hook(budget_s)`` runs when the process starts stopping, beside the others."""
    _hooks.append(hook)


async def drain(budget_s: float) -> None:
    _state["draining"] = True
    if _hooks:
        _, pending = await asyncio.wait(
            [asyncio.ensure_future(h(budget_s)) for h in _hooks], timeout=budget_s
        )
        for task in pending:
            task.cancel()


def install(drain_s: float) -> None:
    """Wrap uvicorn's shutdown (as BentoML's workers run it); call before the server starts."""
    original = uvicorn.Server.shutdown
    if getattr(original, "_drains", False):
        return

    async def shutdown(self: uvicorn.Server, sockets: list[socket.socket] | None = None) -> None:
        started = time.monotonic()
        for server in self.servers:
            server.close()  # stop accepting connections before anything else
        log.info("draining for at most %.0f s", drain_s)
        await drain(drain_s * 0.75)  # streams first; uploads keep running meanwhile
        left = max(1.0, drain_s - (time.monotonic() - started))
        self.config.timeout_graceful_shutdown = round(left)
        await original(self, sockets)
        log.info("drained in %.2f s", time.monotonic() - started)

    shutdown._drains = True  # type: ignore[attr-defined]
    uvicorn.Server.shutdown = shutdown  # type: ignore[method-assign]
