"""Windows a model service has accepted and not answered yet: the depth of BentoML's batch
queue, which BentoML does not expose, counted by our own code around the batched API.

A window counts from the moment the service parses it out of a request (``WindowItem``
notes its own arrival, in a model service's request context only: see
:class:`CountArrivals`) until ``infer`` returns or fails for it. The count holds the items
weakly, so a request cancelled while queued (its caller gone) leaves the count when its
items are freed, without a decrement anyone could forget.
"""

from __future__ import annotations

import weakref
from contextvars import ContextVar
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send


class PendingWindows:
    """Items by id, each held by a weak reference whose callback forgets it when freed
    (pydantic models are unhashable, so no WeakSet). Plain dict operations: atomic under
    the GIL, safe from BentoML's worker threads and from the collector's callbacks."""

    def __init__(self) -> None:
        self._refs: dict[int, weakref.ref[Any]] = {}

    def arrived(self, item: object) -> None:
        key = id(item)

        def freed(ref: weakref.ref[Any]) -> None:
            if self._refs.get(key) is ref:
                self._refs.pop(key, None)

        self._refs[key] = weakref.ref(item, freed)

    def answered(self, items: list[Any]) -> None:
        for item in items:
            self._refs.pop(id(item), None)

    def count(self) -> int:
        return len(self._refs)


PENDING = PendingWindows()  # one per process: each model-service worker counts its own
_ARRIVING: ContextVar[PendingWindows | None] = ContextVar("sevensense_arriving", default=None)


def note_arrival(item: object) -> None:
    """Called by every ``WindowItem`` built; counts only those a model service receives."""
    pending = _ARRIVING.get()
    if pending is not None:
        pending.arrived(item)


class CountArrivals:
    """ASGI middleware of the model services: windows parsed while it serves a request
    are this process's arrivals (the gateway builds ``WindowItem`` objects too, uncounted)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = _ARRIVING.set(PENDING if scope["type"] == "http" else None)
        try:
            await self.app(scope, receive, send)
        finally:
            _ARRIVING.reset(token)
