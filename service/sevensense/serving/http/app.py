"""The partner HTTP API, a FastAPI app mounted on the BentoML entry service.

FastAPI rather than BentoML's own endpoints because the contract is ours: one JSON error
shape for every failure (validation, auth, size, decoding, overload), a multipart upload
that accepts whatever content type a field recorder's script sends, and an OpenAPI document
that describes exactly that. BentoML still owns the process model, batching, /livez,
/readyz and /metrics. The routes are in :mod:`.routes`; this module assembles the app.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

from sevensense.errors import RequestError, SevensenseError
from sevensense.identity import Scope as KeyScope
from sevensense.serving.http.auth import route_scope
from sevensense.serving.http.context import STATE_NAME, ApiContext, AppParts, request_id
from sevensense.serving.http.docs import add_docs
from sevensense.serving.http.front_door import FrontDoor, Guards, error_payload, request_id_of
from sevensense.serving.http.inflight import InflightLimit
from sevensense.serving.http.routes import agile, archive, embed, jobs, models, search, status
from sevensense.serving.schemas import ErrorBody
from sevensense.serving.telemetry.metrics import metrics
from sevensense.serving.tenant_index import SimilarityService
from sevensense.settings import Settings

log = logging.getLogger(__name__)

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "invalid rollout weights"),
        (401, "missing or unknown API key"),
        (403, "the key lacks the scope"),
        (404, "unknown model, version, reducer, index or index space"),
        (
            409,
            "a version failed verification, loading or the quality gate (the current one "
            "keeps serving); a reducer made for another model version; an index space "
            "that holds nothing this key may search",
        ),
        (413, "upload or audio duration over the limit"),
        (202, "deferred: queued durably; poll the job"),
        (415, "not an audio format we decode"),
        (422, "invalid options or undecodable audio"),
        (429, "rate limit; see Retry-After"),
        (503, "overloaded or no model path; see Retry-After"),
    )
}


def build_app(
    settings: Settings, context: Callable[[], ApiContext], similarity: SimilarityService
) -> FastAPI:
    """``context`` is looked up per request: BentoML mounts the app at import time but
    creates the service instance (and so the gateway) later, inside each worker."""
    app = FastAPI(
        title="7sense inference API",
        version="1",
        summary="Embeddings and species scores for bioacoustic recordings (Perch 2.0, BirdNET).",
        responses=_ERRORS,
        docs_url=None,  # FastAPI's own pages load Swagger UI and ReDoc from a CDN
        redoc_url=None,
    )
    inflight = InflightLimit(settings.serving.max_inflight_requests)
    setattr(app.state, STATE_NAME, AppParts(settings, context, similarity, inflight))
    add_docs(app)
    app.middleware("http")(request_context)
    _add_error_handlers(app)
    routes = include_routers(app)
    _add_front_door(app, settings, context, routes)
    return app


def include_routers(app: FastAPI) -> list[APIRoute]:
    """Mounts the partner API's routers, in this order, which is the OpenAPI document's,
    and gives their routes: FastAPI includes a router lazily, so ``app.routes`` holds the
    routers, not their routes."""
    routers = [module.router for module in (embed, jobs, search, agile, models, status, archive)]
    for router in routers:
        app.include_router(router)
    return [route for router in routers for route in router.routes if isinstance(route, APIRoute)]


async def request_context(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    state = request.scope.setdefault("state", {})
    if "request_id" not in state:  # set by the front door, else here
        state["request_id"] = request_id_of(dict(request.scope.get("headers") or []))
    started = time.perf_counter()
    response = await call_next(request)
    route = request.scope.get("route")
    endpoint = getattr(route, "path", "unmatched")
    m = metrics()
    m.http_requests.labels(endpoint, str(response.status_code)).inc()
    m.http_latency.labels(endpoint).observe(time.perf_counter() - started)
    response.headers["X-Request-ID"] = request.state.request_id
    return response


def error_response(
    request: Request, status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> Response:
    body, headers = error_payload(status, code, message, request_id(request), details)
    return Response(body, status, headers, "application/json")


async def sevensense_error(request: Request, exc: SevensenseError) -> Response:
    if exc.http_status >= 500:
        log.warning("request %s failed: %s", request_id(request), exc.message)
    return error_response(request, exc.http_status, exc.code, exc.message, exc.details)


async def validation_error(request: Request, exc: RequestValidationError) -> Response:
    problems = [
        f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in exc.errors()
    ]
    return error_response(request, 422, RequestError.code, "; ".join(problems))


async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    codes = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}
    return error_response(
        request, exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail)
    )


async def unexpected(request: Request, exc: Exception) -> Response:
    log.exception("request %s: unexpected error", request_id(request))
    return error_response(
        request, 500, "internal_error", "unexpected error; the server log has the details"
    )


def _add_error_handlers(app: FastAPI) -> None:
    """Every failure in the one JSON shape of :func:`error_payload`."""
    app.exception_handler(SevensenseError)(sevensense_error)
    app.exception_handler(RequestValidationError)(validation_error)
    app.exception_handler(StarletteHTTPException)(http_error)
    app.exception_handler(Exception)(unexpected)


def _matching_route(routes: list[APIRoute], scope: Scope) -> APIRoute | None:
    for route in routes:
        if route.matches(scope)[0] is Match.FULL:
            return route
    return None


def _add_front_door(
    app: FastAPI, settings: Settings, context: Callable[[], ApiContext], routes: list[APIRoute]
) -> None:
    """Outermost: decides from the headers before anything reads the body. ``routes`` are
    the HTTP routes whose scope it enforces; a WebSocket (``WS /stream``) passes through
    and admits its key from its opening message."""

    def required_scope(scope: Scope) -> KeyScope | None:
        route = _matching_route(routes, scope)
        return route_scope(route) if route is not None else None

    def endpoint_of(scope: Scope) -> str:
        route = _matching_route(routes, scope)
        return route.path if route is not None else "unmatched"

    def guards() -> Guards | None:
        try:
            ctx = context()
        except RuntimeError:  # not started yet: the routes' own dependency decides
            return None
        return Guards(ctx.keys, ctx.limiter)

    app.add_middleware(
        FrontDoor,
        serving=settings.serving,
        required_scope=required_scope,
        guards=guards,
        endpoint_of=endpoint_of,
    )
