"""``/admin/batch/submissions``: ``sevensense batch submit`` as an admin route. The listing
runs in the background of the task that took it; its report is in the shared store."""

# No ``from __future__ import annotations`` in route modules: FastAPI reads the endpoint
# annotations at run time.
from collections.abc import Callable
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends
from fastapi.responses import Response

from sevensense.archive.listing import parse_s3_uri
from sevensense.archive.submissions import Submissions
from sevensense.archive.submit import SubmitReport, submit_archive
from sevensense.identity import ApiKeyRecord
from sevensense.serving.http.auth import authorised
from sevensense.serving.http.context import Parts
from sevensense.serving.schemas import ArchiveSubmission, ArchiveSubmitRequest
from sevensense.storage.objects import open_store

router = APIRouter()


def _submissions(parts: Parts) -> Submissions:
    return Submissions(open_store(parts.settings.payload_uri()))


def _answer(submission_id: str, report: SubmitReport, status: int) -> Response:
    body = ArchiveSubmission(
        submission_id=submission_id,
        status_url=f"/admin/batch/submissions/{submission_id}",
        report=report,
    )
    headers = {"Location": body.status_url}
    return Response(body.model_dump_json(), status, headers, "application/json")


@router.post(
    "/admin/batch/submissions",
    response_model=ArchiveSubmission,
    status_code=202,
    summary="Enqueue an archive already in S3 for the batch worker",
    description="Every audio object under `source` the worker has not done yet; progress "
    "and the final report (done, skipped, failed with reasons) at the status URL.",
)
async def submit(
    body: ArchiveSubmitRequest,
    key: Annotated[ApiKeyRecord, Depends(authorised("admin"))],
    parts: Parts,
) -> Response:
    parse_s3_uri(body.source)  # a bad URI is refused now, not in the report
    if body.inventory:
        parse_s3_uri(body.inventory)
    submissions = _submissions(parts)

    def run(report: SubmitReport, progress: Callable[[SubmitReport], None]) -> None:
        report.dry_run = body.dry_run
        submit_archive(
            parts.settings,
            body.source,
            inventory=body.inventory,
            per_message=body.per_message,
            dry_run=body.dry_run,
            on_progress=progress,
            report=report,
        )

    submission_id = await anyio.to_thread.run_sync(submissions.start, body.source, run)
    report = await anyio.to_thread.run_sync(submissions.get, submission_id)
    return _answer(submission_id, report, 202)


@router.get(
    "/admin/batch/submissions/{submission_id}",
    response_model=ArchiveSubmission,
    summary="An archive submission's progress, then its final report",
)
async def submission(
    submission_id: str,
    key: Annotated[ApiKeyRecord, Depends(authorised("admin"))],
    parts: Parts,
) -> Response:
    report = await anyio.to_thread.run_sync(_submissions(parts).get, submission_id)
    return _answer(submission_id, report, 200)
