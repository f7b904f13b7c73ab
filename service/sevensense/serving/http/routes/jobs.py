"""``GET /jobs/{job_id}``: a deferred request's status, and its result once done."""

from typing import Annotated

import anyio
from fastapi import APIRouter, Depends

from sevensense.errors import JobNotFoundError
from sevensense.identity import ApiKeyRecord
from sevensense.jobs.records import JobStatus
from sevensense.outputs.detect_response import DetectResponse
from sevensense.outputs.response import EmbedResponse
from sevensense.planning.answers import JSON_MEDIA_TYPE
from sevensense.serving.http.auth import authorised
from sevensense.serving.http.context import Context, Parts
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
}


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
    jobs = ctx.jobs
    if jobs is None:
        raise JobNotFoundError(f"no job {job_id} (no deferred queue configured)")
    record = await anyio.to_thread.run_sync(jobs.get, job_id)
    if record.owner != key.id and "admin" not in key.scopes:
        raise JobNotFoundError(f"no job {job_id}")  # not "forbidden": ids stay private
    result: EmbedResponse | DetectResponse | None = None
    text = None
    limit = parts.settings.queue.inline_result_mb * 1024 * 1024
    if record.status == JobStatus.DONE and (record.result_bytes or 0) <= limit:
        raw = await anyio.to_thread.run_sync(jobs.get_result, job_id)
        if record.result_media_type != JSON_MEDIA_TYPE:  # a BirdNET-Analyzer file
            text = raw.decode()
        elif record.result_kind == "detect":
            result = DetectResponse.model_validate_json(raw)
        else:
            result = EmbedResponse.model_validate_json(raw)
    return JobResponse(
        **record.model_dump(include=_FIELDS),
        status=record.status.value,
        result=result,
        result_text=text,
        result_media_type=record.result_media_type if record.status == JobStatus.DONE else None,
    )
