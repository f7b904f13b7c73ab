"""``POST /search`` and ``DELETE /index/recordings/...``: the tenant's similarity index."""

import asyncio
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile

from sevensense.errors import OverloadedError, RequestError
from sevensense.identity import ApiKeyRecord
from sevensense.serving.dispatch.gateway import DeferredOutcome
from sevensense.serving.http.auth import authorised
from sevensense.serving.http.context import Context, Parts, request_id
from sevensense.serving.schemas import (
    DeleteRecordingResponse,
    EmbedParams,
    SearchParams,
    SearchResponse,
)
from sevensense.serving.tenant_index import outcome_queries, query_vector

router = APIRouter()


@router.post(
    "/search",
    response_model=SearchResponse,
    summary="Similar windows in the index",
    description=(
        "Multipart: an `audio` upload (each window a query, or the one at `window`, "
        "embedded as `/embed` would with `model`, `reduce`, `project`), `embedding`, a "
        "JSON array, or `window_id`, an indexed window of the caller's (the space of both "
        "named by `model=name:version` and `transform`). `k`, "
        "filters `recording_prefix`, `site`, `time_from`, `time_to`; `metric` cosine or "
        "poincare. A partner key searches what it indexed; an admin key searches all."
    ),
)
async def search(
    request: Request,
    key: Annotated[ApiKeyRecord, Depends(authorised("read"))],
    params: Annotated[SearchParams, Form()],
    ctx: Context,
    parts: Parts,
    audio: Annotated[UploadFile | None, File(description="query recording")] = None,
) -> SearchResponse:
    given = [audio is not None, params.embedding is not None, params.window_id is not None]
    if sum(given) != 1:
        raise RequestError("give one of an audio upload, an embedding or a window_id")
    similarity = parts.similarity
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
        timeout = parts.settings.serving.request_timeout_s
        try:
            outcome = await asyncio.wait_for(
                ctx.gateway.embed(audio.file, embed_params, key.id, owner=key.id),
                timeout=timeout,
            )
        except TimeoutError as exc:
            raise OverloadedError(f"no answer within {timeout:g} s", retry_after_s=5.0) from exc
        finally:
            await audio.close()
        if isinstance(outcome, DeferredOutcome):
            raise OverloadedError("no model path could embed the query now", retry_after_s=5.0)
        info, vectors, spans = outcome_queries(outcome, params.window)
    elif params.window_id is not None:
        info = await anyio.to_thread.run_sync(similarity.space_for_vector, params)
        vectors = await anyio.to_thread.run_sync(
            similarity.window_vector, params, info, params.window_id, key
        )
        spans = [(None, None, None)]
    else:
        info = await anyio.to_thread.run_sync(similarity.space_for_vector, params)
        vectors = query_vector(params.embedding or "")[None, :]
        spans = [(None, None, None)]
    return await anyio.to_thread.run_sync(
        similarity.search, params, info, vectors, spans, key, request_id(request)
    )


@router.delete(
    "/index/recordings/{recording_id:path}",
    response_model=DeleteRecordingResponse,
    summary="Delete a recording's windows from the index",
    description="A partner key deletes only what it indexed; an admin key anyone's.",
)
async def delete_recording(
    recording_id: str,
    key: Annotated[ApiKeyRecord, Depends(authorised("embed"))],
    parts: Parts,
    index: str | None = None,
) -> DeleteRecordingResponse:
    name, deleted = await anyio.to_thread.run_sync(
        parts.similarity.delete, index, recording_id, key
    )
    return DeleteRecordingResponse(index=name, recording_id=recording_id, deleted=deleted)
