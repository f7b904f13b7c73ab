"""The partner HTTP API, a FastAPI app mounted on the BentoML entry service.

FastAPI rather than BentoML's own endpoints because the contract is ours: one JSON error
shape for every failure (validation, auth, size, decoding, overload), a multipart upload
that accepts whatever content type a field recorder's script sends, and an OpenAPI document
that describes exactly that. BentoML still owns the process model, batching, /livez,
/readyz and /metrics.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations at
# run time, and the dependencies in them are closures of build_app.
import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any, cast

import anyio
from fastapi import Depends, FastAPI, File, Form, Header, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sevensense.embeddings.quality import process_monitors
from sevensense.errors import (
    JobNotFoundError,
    ModelError,
    OverloadedError,
    RequestError,
    SevensenseError,
)
from sevensense.identity import ApiKeyRecord
from sevensense.identity import Scope as KeyScope
from sevensense.inference.engine import species_mask
from sevensense.jobs.records import IndexTarget, JobStatus
from sevensense.jobs.store import JobStore
from sevensense.outputs.detections import (
    MEDIA_TYPES,
    AnalysisParams,
    DetectionCollector,
    DetectionFormat,
    render,
)
from sevensense.outputs.response import (
    ARROW_MEDIA_TYPE,
    EmbedOutcome,
    EmbedResponse,
    to_arrow,
    to_response,
)
from sevensense.serving.access.admission import admit, anonymous
from sevensense.serving.access.keys import API_KEY_HEADER, KeyStore, key_from_headers
from sevensense.serving.access.ratelimit import RateLimiter
from sevensense.serving.dispatch.gateway import DeferredOutcome, Gateway
from sevensense.serving.http.front_door import (
    STATE_KEY,
    FrontDoor,
    Guards,
    error_payload,
    request_id_of,
)
from sevensense.serving.rollout.activation import RolloutAdmin
from sevensense.serving.schemas import (
    TEXT_FORMATS,
    ActivateRequest,
    DeferredResponse,
    DeleteRecordingResponse,
    DetectionJSON,
    DetectResponse,
    EmbedParams,
    ErrorBody,
    JobResponse,
    ModelDetail,
    ModelList,
    QualityAnswer,
    RolloutResponse,
    SearchParams,
    SearchResponse,
    TrafficRequest,
)
from sevensense.serving.stream.protocol import PATH as STREAM_PATH
from sevensense.serving.stream.socket import StreamEndpoint
from sevensense.serving.telemetry import tracing
from sevensense.serving.telemetry.metrics import metrics
from sevensense.serving.tenant_index import SimilarityService, outcome_queries, query_vector
from sevensense.settings import ServingSettings, Settings

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


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


def error_response(
    request: Request, status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> Response:
    body, headers = error_payload(status, code, message, request_id(request), details)
    return Response(body, status, headers, "application/json")


@dataclass
class ApiContext:
    """What the routes need; built in the serving process, after the app object exists."""

    gateway: Gateway
    admin: RolloutAdmin
    jobs: JobStore | None
    keys: KeyStore
    limiter: RateLimiter
    ready: Callable[[], Awaitable[bool]]


class JsonForUnmatched:
    """Paths outside our app fall through to BentoML's router, which answers 404/405 in plain
    text; rewrite those so that every error a partner can get has the same JSON shape."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        replaced = False

        async def rewrite(message: Message) -> None:
            nonlocal held, replaced
            if replaced:
                return
            if message["type"] == "http.response.start":
                plain = dict(message.get("headers") or []).get(b"content-type", b"")
                if message["status"] in (404, 405) and not plain.startswith(b"application/json"):
                    held = message
                    return
            elif held is not None:
                status = held["status"]
                code = "not_found" if status == 404 else "method_not_allowed"
                rid = uuid.uuid4().hex
                text = "no such endpoint" if status == 404 else "method not allowed here"
                body = json.dumps(
                    {"error": {"code": code, "message": text, "request_id": rid}}
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": status,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"x-request-id", rid.encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                replaced = True
                return
            await send(message)

        await self.app(scope, receive, rewrite)


class ReadyDetail:
    """``GET /readyz?detail=1`` (or with ``Accept: application/json``) answers with each
    path's readiness and breaker; plain ``/readyz`` stays BentoML's, for load balancers."""

    def __init__(
        self, app: ASGIApp, detail: Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]
    ) -> None:
        self.app = app
        self.detail = detail

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") == "/readyz" and self._wants(scope):
            try:
                ready, body = await self.detail()
            except RuntimeError as exc:  # the service is still starting
                ready, body = False, {"ready": False, "reason": str(exc)}
            response = JSONResponse(body, status_code=200 if ready else 503)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _wants(scope: Scope) -> bool:
        query = scope.get("query_string", b"").decode("latin-1")
        accept = dict(scope.get("headers") or []).get(b"accept", b"")
        return "detail" in query or accept.startswith(b"application/json")


API_KEY = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="partner key")


class Authorised:
    """A route's required scope, declared once as its dependency. The front door reads the
    scope to decide before the body is read, and leaves the key it admitted in the request
    state; FastAPI then runs this, which returns that key (the request is charged to the
    rate limit once) or, when the front door could not decide (the service was still
    starting), admits the headers itself."""

    def __init__(
        self, scope: KeyScope, serving: ServingSettings, context: Callable[[], ApiContext]
    ) -> None:
        self.scope: KeyScope = scope
        self.serving = serving
        self.context = context

    def __call__(
        self,
        request: Request,
        x_api_key: Annotated[str | None, Depends(API_KEY)],
        authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    ) -> ApiKeyRecord:
        if not self.serving.auth_required:
            return anonymous(self.scope)
        admitted = request.scope.get("state", {}).get(STATE_KEY)
        if isinstance(admitted, ApiKeyRecord):
            return admitted
        ctx = self.context()
        return admit(ctx.keys, ctx.limiter, key_from_headers(authorization, x_api_key), self.scope)


def _route_scope(route: APIRoute) -> KeyScope | None:
    stack = list(route.dependant.dependencies)
    while stack:
        dependency = stack.pop()
        if isinstance(dependency.call, Authorised):
            return dependency.call.scope
        stack.extend(dependency.dependencies)
    return None


def _matching_route(app: FastAPI, scope: Scope) -> APIRoute | None:
    for route in app.routes:
        if isinstance(route, APIRoute) and route.matches(scope)[0] is Match.FULL:
            return route
    return None


DOCS_ASSETS = "/docs/assets"
# The pages' own inline bootstrap and styles, and ReDoc's search worker, are all they need;
# the browser refuses anything else, such as the logo ReDoc would fetch from its CDN.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; frame-ancestors 'none'"
)


def _add_docs(app: FastAPI) -> None:
    """``/docs`` and ``/redoc`` as FastAPI serves them, but with Swagger UI and ReDoc from the
    installed ``fastapi-offline`` package instead of a CDN: the AWS deployment has no NAT and
    field stations have no internet, and there the CDN pages stay blank. No ``Authorised``
    dependency, so the front door leaves them open, like ``/openapi.json``."""
    assert app.openapi_url is not None and app.swagger_ui_oauth2_redirect_url is not None
    openapi_url, redirect_url = app.openapi_url, app.swagger_ui_oauth2_redirect_url
    static = resources.files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(static)), name="docs-assets")

    def root(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    async def swagger_ui(request: Request) -> HTMLResponse:
        base = root(request)
        page = get_swagger_ui_html(
            openapi_url=base + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{base}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{base}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{base}{DOCS_ASSETS}/favicon.png",
            oauth2_redirect_url=base + redirect_url,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page

    async def swagger_ui_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        base = root(request)
        page = get_redoc_html(
            openapi_url=base + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{base}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{base}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page

    app.add_route("/docs", swagger_ui, include_in_schema=False)
    app.add_route(redirect_url, swagger_ui_redirect, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)


def build_app(settings: Settings, context: Callable[[], ApiContext]) -> FastAPI:
    """``context`` is looked up per request: BentoML mounts the app at import time but
    creates the service instance (and so the gateway) later, inside each worker."""
    serving = settings.serving
    app = FastAPI(
        title="7sense inference API",
        version="1",
        summary="Embeddings and species scores for bioacoustic recordings (Perch 2.0, BirdNET).",
        responses=_ERRORS,
        docs_url=None,  # FastAPI's own pages load Swagger UI and ReDoc from a CDN
        redoc_url=None,
    )
    _add_docs(app)
    inflight = 0
    similarity = SimilarityService(settings)

    @app.middleware("http")
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

    @app.exception_handler(SevensenseError)
    async def sevensense_error(request: Request, exc: SevensenseError) -> Response:
        if exc.http_status >= 500:
            log.warning("request %s failed: %s", request_id(request), exc.message)
        return error_response(request, exc.http_status, exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in exc.errors()
        ]
        return error_response(request, 422, RequestError.code, "; ".join(problems))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        codes = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}
        return error_response(
            request, exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail)
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("request %s: unexpected error", request_id(request))
        return error_response(
            request, 500, "internal_error", "unexpected error; the server log has the details"
        )

    def authorised(scope: KeyScope) -> Authorised:
        return Authorised(scope, serving, context)

    @app.post(
        "/embed",
        response_model=EmbedResponse,
        summary="Embed one recording",
        description=(
            "Multipart upload: `audio` (WAV, FLAC, OGG/Vorbis, Opus, MP3; any rate, any "
            "number of channels) plus options as form fields. JSON by default; "
            f"`format=arrow` or `Accept: {ARROW_MEDIA_TYPE}` returns an Arrow IPC stream "
            "with the CLI's Parquet columns; `format=raven|audacity|csv|kaleidoscope` returns "
            "the detections as BirdNET-Analyzer 2.4.0 writes them."
        ),
        responses={200: {"content": {ARROW_MEDIA_TYPE: {}, "text/plain": {}}}},
    )
    async def embed(
        request: Request,
        key: Annotated[ApiKeyRecord, Depends(authorised("embed"))],
        audio: Annotated[UploadFile, File(description="the recording")],
        params: Annotated[EmbedParams, Form()],
    ) -> Response:
        return await serve(request, key, audio, params, detect=params.format in TEXT_FORMATS)

    @app.post(
        "/detect",
        response_model=DetectResponse,
        summary="Species detections in one recording",
        description=(
            "The same upload and form fields as `/embed`. Every window's classes scoring at "
            "least `min_conf` (or its best `top_k`), within the species filter (`lat`/`lon`/"
            "`week`/`sf_thresh` or `species`). JSON by default; "
            "`format=raven|audacity|csv|kaleidoscope` returns BirdNET-Analyzer 2.4.0's file."
        ),
        responses={200: {"content": {"text/plain": {}}}},
    )
    async def detect(
        request: Request,
        key: Annotated[ApiKeyRecord, Depends(authorised("embed"))],
        audio: Annotated[UploadFile, File(description="the recording")],
        params: Annotated[EmbedParams, Form()],
    ) -> Response:
        return await serve(request, key, audio, params, detect=True)

    async def serve(
        request: Request,
        key: ApiKeyRecord,
        audio: UploadFile,
        params: EmbedParams,
        *,
        detect: bool,
    ) -> Response:
        nonlocal inflight
        gateway = context().gateway
        wants_arrow = params.format == "arrow" or (
            params.format is None and ARROW_MEDIA_TYPE in request.headers.get("accept", "")
        )
        if detect:  # every class's score, for the detections; not returned as logits
            params = params.model_copy(update={"include_logits": True})
        if inflight >= serving.max_inflight_requests:
            raise OverloadedError(
                f"{inflight} requests in flight on this worker; retry shortly", retry_after_s=1.0
            )
        routing_key = params.recording_id or request.headers.get("x-routing-key") or key.id
        target = None
        if params.index and not detect:
            target = IndexTarget(
                tenant=key.id,
                recording_id=params.recording_id or audio.filename or request_id(request),
                site=params.site,
                recorded_at=params.recorded_at,
            )
        inflight += 1
        try:
            with tracing.span("embed", request_id=request_id(request), key=key.id):
                outcome = await asyncio.wait_for(
                    gateway.embed(audio.file, params, routing_key, owner=key.id, index=target),
                    timeout=serving.request_timeout_s,
                )
        except TimeoutError as exc:
            raise OverloadedError(
                f"no answer within {serving.request_timeout_s:g} s", retry_after_s=5.0
            ) from exc
        finally:
            inflight -= 1
            await audio.close()
        if isinstance(outcome, DeferredOutcome):
            return deferred_response(outcome)
        indexed = None
        if target is not None:
            indexed = await anyio.to_thread.run_sync(
                similarity.add_outcome,
                outcome,
                target.tenant,
                target.recording_id,
                target.site,
                target.recorded_at,
            )
        ident = outcome.artifact.manifest.identity
        outcome_label = "fallback" if outcome.fallback else "ok"
        metrics().embed_requests.labels(
            ident.name, ident.version, outcome.route, outcome_label
        ).inc()
        headers = {
            "X-Model-Name": ident.name,
            "X-Model-Version": ident.version,
            "X-Model-Variant": ident.variant,
            "X-Served-By": outcome.route,
            "X-Provider": ",".join(outcome.providers),
            "X-Fallback": "true" if outcome.fallback else "false",
        }
        if outcome.degraded:
            headers["X-Degraded"] = ",".join(outcome.degraded)
        if indexed is not None:
            headers["X-Indexed-Windows"] = str(indexed)
        if detect:
            name = audio.filename or params.recording_id or "upload"
            return detections_response(outcome, params, name, request_id(request), headers)
        if wants_arrow:
            return Response(to_arrow(outcome, request_id(request)), 200, headers, ARROW_MEDIA_TYPE)
        body = to_response(outcome, request_id(request)).model_dump_json(exclude_none=True)
        return Response(body, 200, headers, "application/json")

    def detections_response(
        outcome: EmbedOutcome,
        params: EmbedParams,
        name: str,
        rid: str,
        headers: dict[str, str],
    ) -> Response:
        resolver = context().gateway.resolver
        artifact = outcome.artifact
        labels = resolver.full_labels(artifact)
        if labels is None:
            raise ModelError(f"{artifact.manifest.identity} has no classifier: nothing to detect")
        allowed = species_mask(resolver.labels(artifact), outcome.species)
        collector = DetectionCollector(
            labels, min_conf=params.min_conf, top_k=params.top_k or None, allowed=allowed
        )
        for result in outcome.results:
            collector.add(result)
        stats = outcome.stats
        rate = stats.info.sample_rate if stats.info else artifact.manifest.sample_rate
        rec = collector.recording("upload", stats.duration_s, rate, path=name)
        if params.format in TEXT_FORMATS:
            fmt = cast(DetectionFormat, params.format)
            located = params.lat is not None and params.lon is not None
            analysis = AnalysisParams(
                lat=params.lat if located and params.lat is not None else -1.0,
                lon=params.lon if located and params.lon is not None else -1.0,
                week=params.week if located else -1.0,
                overlap=round(outcome.window_s - outcome.hop_s, 4),
            )
            text = render(fmt, [rec], codes=resolver.species_codes(artifact), params=analysis)
            return Response(text, 200, headers, MEDIA_TYPES[fmt])
        body = DetectResponse(
            request_id=rid,
            model=artifact.manifest.identity,
            duration_s=stats.duration_s,
            min_conf=params.min_conf,
            top_k=params.top_k or None,
            species_filter=outcome.species_filter,
            windows=len(outcome.results),
            detections=[
                DetectionJSON(
                    start_s=round(d.start_s, 6),
                    end_s=round(d.end_s, 6),
                    scientific_name=d.scientific,
                    common_name=d.common,
                    label=d.label,
                    confidence=d.confidence,
                )
                for d in rec.detections
            ],
        )
        return Response(body.model_dump_json(exclude_none=True), 200, headers, "application/json")

    def deferred_response(outcome: DeferredOutcome) -> Response:
        job = outcome.job
        body = DeferredResponse(
            job_id=job.job_id,
            status=job.status.value,
            status_url=f"/jobs/{job.job_id}",
            reason=outcome.reason,
            submitted_at=job.submitted_at,
        )
        headers = {"Location": body.status_url, "X-Job-ID": job.job_id}
        return Response(body.model_dump_json(), 202, headers, "application/json")

    @app.get(
        "/jobs/{job_id}",
        response_model=JobResponse,
        summary="A deferred request: status, and the result once done",
    )
    async def get_job(
        job_id: str, key: Annotated[ApiKeyRecord, Depends(authorised("read"))]
    ) -> JobResponse:
        jobs = context().jobs
        if jobs is None:
            raise JobNotFoundError(f"no job {job_id} (no deferred queue configured)")
        record = await anyio.to_thread.run_sync(jobs.get, job_id)
        if record.owner != key.id and "admin" not in key.scopes:
            raise JobNotFoundError(f"no job {job_id}")  # not "forbidden": ids stay private
        result = None
        limit = settings.queue.inline_result_mb * 1024 * 1024
        if record.status == JobStatus.DONE and (record.result_bytes or 0) <= limit:
            raw = await anyio.to_thread.run_sync(jobs.get_result, job_id)
            result = EmbedResponse.model_validate_json(raw)
        return JobResponse(
            **record.model_dump(
                include={
                    "job_id",
                    "model",
                    "reason",
                    "submitted_at",
                    "updated_at",
                    "started_at",
                    "finished_at",
                    "attempts",
                    "windows",
                    "result_location",
                    "error",
                }
            ),
            status=record.status.value,
            result=result,
        )

    @app.post(
        "/search",
        response_model=SearchResponse,
        summary="Similar windows in the index",
        description=(
            "Multipart: an `audio` upload (each window a query, or the one at `window`, "
            "embedded as `/embed` would with `model`, `reduce`, `project`) or `embedding`, a "
            "JSON array (its space named by `model=name:version` and `transform`). `k`, "
            "filters `recording_prefix`, `site`, `time_from`, `time_to`; `metric` cosine or "
            "poincare. A partner key searches what it indexed; an admin key searches all."
        ),
    )
    async def search(
        request: Request,
        key: Annotated[ApiKeyRecord, Depends(authorised("read"))],
        params: Annotated[SearchParams, Form()],
        audio: Annotated[UploadFile | None, File(description="query recording")] = None,
    ) -> SearchResponse:
        if (audio is None) == (params.embedding is None):
            raise RequestError("give either an audio upload or an embedding, not both or neither")
        if audio is not None:
            embed_params = EmbedParams(
                model=params.model,
                overlap=params.overlap,
                top_k=0,
                reduce=params.reduce,
                project=params.project,
                curvature=params.curvature,
                max_norm=params.max_norm,
            )
            try:
                outcome = await asyncio.wait_for(
                    context().gateway.embed(audio.file, embed_params, key.id, owner=key.id),
                    timeout=serving.request_timeout_s,
                )
            except TimeoutError as exc:
                raise OverloadedError(
                    f"no answer within {serving.request_timeout_s:g} s", retry_after_s=5.0
                ) from exc
            finally:
                await audio.close()
            if isinstance(outcome, DeferredOutcome):
                raise OverloadedError("no model path could embed the query now", retry_after_s=5.0)
            info, vectors, spans = outcome_queries(outcome, params.window)
        else:
            info = await anyio.to_thread.run_sync(similarity.space_for_vector, params)
            vectors = query_vector(params.embedding or "")[None, :]
            spans = [(None, None, None)]
        return await anyio.to_thread.run_sync(
            similarity.search, params, info, vectors, spans, key, request_id(request)
        )

    @app.delete(
        "/index/recordings/{recording_id:path}",
        response_model=DeleteRecordingResponse,
        summary="Delete a recording's windows from the index",
        description="A partner key deletes only what it indexed; an admin key anyone's.",
    )
    async def delete_recording(
        recording_id: str,
        key: Annotated[ApiKeyRecord, Depends(authorised("embed"))],
        index: str | None = None,
    ) -> DeleteRecordingResponse:
        name, deleted = await anyio.to_thread.run_sync(similarity.delete, index, recording_id, key)
        return DeleteRecordingResponse(index=name, recording_id=recording_id, deleted=deleted)

    @app.get("/models", response_model=ModelList, summary="Models, versions and traffic split")
    async def list_models(
        _: Annotated[ApiKeyRecord, Depends(authorised("read"))],
    ) -> ModelList:
        return context().admin.model_list()

    @app.get("/models/{name}", response_model=ModelDetail, summary="One model with manifests")
    async def get_model(
        name: str, _: Annotated[ApiKeyRecord, Depends(authorised("read"))]
    ) -> ModelDetail:
        return context().admin.model_detail(name)

    @app.post(
        "/admin/models/{name}/activate",
        response_model=RolloutResponse,
        summary="Hot swap: verify, load and warm a version, then route all traffic to it",
    )
    async def activate(
        name: str,
        body: ActivateRequest,
        key: Annotated[ApiKeyRecord, Depends(authorised("admin"))],
    ) -> RolloutResponse:
        return await context().admin.activate(
            name, body.version, body.variant, key.id, force=body.force
        )

    @app.put(
        "/admin/models/{name}/traffic",
        response_model=RolloutResponse,
        summary="Canary: set traffic weights between versions (each is verified and warmed)",
    )
    async def traffic(
        name: str,
        body: TrafficRequest,
        key: Annotated[ApiKeyRecord, Depends(authorised("admin"))],
    ) -> RolloutResponse:
        return await context().admin.set_traffic(
            name, body.weights, body.variant, key.id, force=body.force
        )

    @app.get(
        "/quality",
        response_model=QualityAnswer,
        summary="Embedding-quality monitor (ADR-007 §6.1) per model version, this process",
    )
    async def quality(_: Annotated[ApiKeyRecord, Depends(authorised("read"))]) -> QualityAnswer:
        return QualityAnswer(pid=os.getpid(), models=process_monitors(settings.quality).reports())

    @app.get("/status", summary="Model paths, rollouts and limits of this gateway worker")
    async def status(_: Annotated[ApiKeyRecord, Depends(authorised("read"))]) -> dict[str, Any]:
        ctx = context()
        gateway = ctx.gateway
        await gateway.router.refresh()
        return {
            "ready": await ctx.ready(),
            "paths": gateway.describe(),
            "default_model": gateway.resolver.default_model(),
            "inflight": inflight,
            "limits": {
                "max_upload_mb": serving.max_upload_mb,
                "max_audio_s": serving.max_audio_s,
                "max_inflight_requests": serving.max_inflight_requests,
                "rate_limit_per_s": serving.rate_limit_per_s,
            },
        }

    def stream_parts() -> tuple[Gateway, KeyStore, RateLimiter]:
        ctx = context()
        return ctx.gateway, ctx.keys, ctx.limiter

    streams = StreamEndpoint(settings, stream_parts, similarity)
    # The protocol (messages, close codes) is in serving/stream/protocol.py; OpenAPI cannot
    # describe a WebSocket, so README.md documents it with a plain client.
    app.add_api_websocket_route(STREAM_PATH, streams, name="stream")

    def required_scope(scope: Scope) -> KeyScope | None:
        route = _matching_route(app, scope)
        return _route_scope(route) if route is not None else None

    def endpoint_of(scope: Scope) -> str:
        route = _matching_route(app, scope)
        return route.path if route is not None else "unmatched"

    def guards() -> Guards | None:
        try:
            ctx = context()
        except RuntimeError:  # not started yet: the routes' own dependency decides
            return None
        return Guards(ctx.keys, ctx.limiter)

    # Outermost: decides from the headers before anything reads the body.
    app.add_middleware(
        FrontDoor,
        serving=serving,
        required_scope=required_scope,
        guards=guards,
        endpoint_of=endpoint_of,
    )
    return app
