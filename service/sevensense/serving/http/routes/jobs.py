"""``GET /jobs/{job_id}``: a deferred request's or agile job's status, and its result once
done; ``GET /jobs/{job_id}/files/{name}``: a file an agile job wrote."""

import mimetypes
from collections.abc import Iterator
from typing import Annotated, BinaryIO

import anyio
from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool

from sevensense.errors import JobNotFoundError, ObjectNotFoundError
from sevensense.identity import ApiKeyRecord
from sevensense.jobs.records import ApplyJobResult, JobRecord, JobStatus, TrainJobResult
from sevensense.jobs.store import JobStore
from sevensense.outputs.detect_response import DetectResponse
from sevensense.outputs.response import EmbedResponse
from sevensense.planning.answers import JSON_MEDIA_TYPE
from sevensense.serving.http.auth import authorised
from sevensense.serving.http.context import ApiContext, Context, Parts
from sevensense.serving.schemas import JobResponse

router = APIRouter()

_FIELDS = {
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
    "result_kind",
    "progress",
}


_RESULTS: dict[str, type[EmbedResponse | DetectResponse | TrainJobResult | ApplyJobResult]] = {
    "embed": EmbedResponse,
    "detect": DetectResponse,
    "classifier": TrainJobResult,
    "apply": ApplyJobResult,
}


async def _owned(ctx: ApiContext, key: ApiKeyRecord, job_id: str) -> tuple[JobStore, JobRecord]:
    jobs = ctx.jobs
    if jobs is None:
        raise JobNotFoundError(f"no job {job_id} (no deferred queue configured)")
    record = await anyio.to_thread.run_sync(jobs.get, job_id)
    if record.owner != key.id and "admin" not in key.scopes:
        raise JobNotFoundError(f"no job {job_id}")  # not "forbidden": ids stay private
    return jobs, record


@router.get(
    "/jobs/{job_id}",
    response_model=JobResponse,
    summary="A deferred request: status, and the result once done",
)
async def get_job(
    job_id: str,
    key: Annotated[ApiKeyRecord, Depends(authorised("read"))],
    ctx: Context,
    parts: Parts,
) -> JobResponse:
    jobs, record = await _owned(ctx, key, job_id)
    result: EmbedResponse | DetectResponse | TrainJobResult | ApplyJobResult | None = None
    text = None
    limit = parts.settings.queue.inline_result_mb * 1024 * 1024
    if record.status == JobStatus.DONE and (record.result_bytes or 0) <= limit:
        raw = await anyio.to_thread.run_sync(jobs.get_result, job_id)
        if record.result_media_type != JSON_MEDIA_TYPE:  # a BirdNET-Analyzer file
            text = raw.decode()
        else:
            result = _RESULTS[record.result_kind].model_validate_json(raw)
    return JobResponse(
        **record.model_dump(include=_FIELDS),
        status=record.status.value,
        result=result,
        result_text=text,
        result_media_type=record.result_media_type if record.status == JobStatus.DONE else None,
    )


@router.get(
    "/jobs/{job_id}/files/{name:path}",
    response_class=StreamingResponse,
    summary="A file an agile job wrote (classifier apply: scores, detections, density)",
)
async def get_job_file(
    job_id: str,
    name: str,
    key: Annotated[ApiKeyRecord, Depends(authorised("read"))],
    ctx: Context,
) -> StreamingResponse:
    jobs, record = await _owned(ctx, key, job_id)
    parts = name.split("/")
    if record.status != JobStatus.DONE or any(p in ("", ".", "..") for p in parts):
        raise JobNotFoundError(f"job {job_id} has no file {name!r}")
    try:
        stream = await anyio.to_thread.run_sync(jobs.open_file, job_id, name)
    except ObjectNotFoundError:
        raise JobNotFoundError(f"job {job_id} has no file {name!r}") from None
    media = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return StreamingResponse(iterate_in_threadpool(_chunks(stream)), media_type=media)


def _chunks(stream: BinaryIO, size: int = 1 << 20) -> Iterator[bytes]:
    with stream:
        while chunk := stream.read(size):
            yield chunk
