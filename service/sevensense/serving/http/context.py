"""What the routes get through FastAPI dependencies instead of closures: the parts the app
was built with, kept in ``app.state``, and the per-worker context behind them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, Request

from sevensense.jobs.store import JobStore
from sevensense.jobs.submit import Deferrer
from sevensense.serving.access.keys import KeyStore
from sevensense.serving.access.ratelimit import RateLimiter
from sevensense.serving.dispatch.gateway import Gateway
from sevensense.serving.http.inflight import InflightLimit
from sevensense.serving.rollout.activation import RolloutAdmin
from sevensense.serving.tenant_index import SimilarityService
from sevensense.settings import Settings


@dataclass
class ApiContext:
    """What the routes need; built in the serving process, after the app object exists."""

    gateway: Gateway
    admin: RolloutAdmin
    jobs: JobStore | None
    keys: KeyStore
    limiter: RateLimiter
    ready: Callable[[], Awaitable[bool]]
    queue: Deferrer | None = None  # agile jobs: always queued, whatever the fallback chain


@dataclass(frozen=True)
class AppParts:
    """Held in ``app.state``; ``context`` is looked up per request, because BentoML mounts
    the app at import time but creates the gateway later, inside each worker."""

    settings: Settings
    context: Callable[[], ApiContext]
    similarity: SimilarityService
    inflight: InflightLimit


STATE_NAME = "parts"


def parts_of(request: Request) -> AppParts:
    return cast(AppParts, getattr(request.app.state, STATE_NAME))


def get_context(request: Request) -> ApiContext:
    return parts_of(request).context()


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


# What a route declares to get them.
Parts = Annotated[AppParts, Depends(parts_of)]
Context = Annotated[ApiContext, Depends(get_context)]
