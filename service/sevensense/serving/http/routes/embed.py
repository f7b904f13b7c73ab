"""``POST /embed`` and ``POST /detect``: one upload through the gateway, answered as
embeddings (JSON or Arrow), detections (JSON or BirdNET-Analyzer's files), or a deferred
job when no model path can take it now."""

# No ``from __future__ import annotations`` in route modules: FastAPI reads the endpoint
# annotations at run time.
import asyncio
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import Response

from sevensense.errors import OverloadedError
from sevensense.identity import ApiKeyRecord
from sevensense.jobs.records import IndexTarget
from sevensense.outputs.detect_response import DetectResponse
from sevensense.outputs.formats import TEXT_FORMATS
from sevensense.outputs.response import ARROW_MEDIA_TYPE, EmbedResponse, to_arrow, to_response
from sevensense.serving.dispatch.gateway import DeferredOutcome
from sevensense.serving.http.auth import authorised
from sevensense.serving.http.context import ApiContext, AppParts, Context, Parts, request_id
from sevensense.serving.http.routes.answers import deferred_response, detections_response
from sevensense.serving.schemas import EmbedParams
from sevensense.serving.telemetry import tracing
from sevensense.serving.telemetry.metrics import metrics
from sevensense.serving.tenant_index import key_scope

router = APIRouter()


@router.post(
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
    ctx: Context,
    parts: Parts,
) -> Response:
    detect = params.format in TEXT_FORMATS
    return await serve_upload(request, key, audio, params, ctx, parts, detect=detect)


@router.post(
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
    ctx: Context,
    parts: Parts,
) -> Response:
    return await serve_upload(request, key, audio, params, ctx, parts, detect=True)


async def serve_upload(
    request: Request,
    key: ApiKeyRecord,
    audio: UploadFile,
    params: EmbedParams,
    ctx: ApiContext,
    parts: AppParts,
    *,
    detect: bool,
) -> Response:
    """Both routes' one path, so that ``format=raven`` on ``/embed`` answers exactly as
    ``/detect`` does."""
    serving = parts.settings.serving
    rid = request_id(request)
    wants_arrow = params.format == "arrow" or (
        params.format is None and ARROW_MEDIA_TYPE in request.headers.get("accept", "")
    )
    if detect:  # every class's score, for the detections; not returned as logits
        params = params.for_detections()
    params = params.for_tenant(key_scope(key).tenant)
    with parts.inflight.slot():
        routing_key = params.recording_id or request.headers.get("x-routing-key") or key.id
        target = None
        if params.index and not detect:
            target = IndexTarget(
                tenant=key.id,
                recording_id=params.recording_id or audio.filename or rid,
                site=params.site,
                recorded_at=params.recorded_at,
            )
        try:
            with tracing.span("embed", request_id=rid, key=key.id):
                outcome = await asyncio.wait_for(
                    ctx.gateway.embed(
                        audio.file,
                        params,
                        routing_key,
                        owner=key.id,
                        index=target,
                        filename=audio.filename,
                    ),
                    timeout=serving.request_timeout_s,
                )
        except TimeoutError as exc:
            raise OverloadedError(
                f"no answer within {serving.request_timeout_s:g} s", retry_after_s=5.0
            ) from exc
        finally:
            await audio.close()
    if isinstance(outcome, DeferredOutcome):
        return deferred_response(outcome)
    indexed = None
    if target is not None:
        indexed = await anyio.to_thread.run_sync(
            parts.similarity.add_outcome,
            outcome,
            target.tenant,
            target.recording_id,
            target.site,
            target.recorded_at,
        )
    ident = outcome.artifact.manifest.identity
    outcome_label = "fallback" if outcome.fallback else "ok"
    metrics().embed_requests.labels(ident.name, ident.version, outcome.route, outcome_label).inc()
    headers = {
        "X-Model-Name": ident.name,
        "X-Model-Version": ident.version,
        "X-Model-Variant": ident.variant,
        "X-Served-By": outcome.route,
        "X-Provider": ",".join(outcome.providers),
        "X-Fallback": "true" if outcome.fallback else "false",
        "X-Resampler": outcome.resampler,
    }
    if outcome.degraded:
        headers["X-Degraded"] = ",".join(outcome.degraded)
    if indexed is not None:
        headers["X-Indexed-Windows"] = str(indexed)
    if detect:
        name = audio.filename or params.recording_id or "upload"
        return detections_response(ctx.gateway.planner, outcome, params, name, rid, headers)
    if wants_arrow:
        return Response(to_arrow(outcome, rid), 200, headers, ARROW_MEDIA_TYPE)
    body = to_response(outcome, rid).model_dump_json(exclude_none=True)
    return Response(body, 200, headers, "application/json")
