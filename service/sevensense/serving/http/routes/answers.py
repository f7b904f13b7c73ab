"""The answers of an upload other than embeddings: its detections (JSON, or the files
BirdNET-Analyzer writes) and the 202 of a deferred request."""

from fastapi.responses import Response

from sevensense.jobs.records import JobRecord
from sevensense.outputs.response import EmbedOutcome
from sevensense.planning.answers import detect_answer
from sevensense.planning.plan import Planner
from sevensense.serving.dispatch.gateway import DeferredOutcome
from sevensense.serving.schemas import DeferredResponse, EmbedParams


def detections_response(
    planner: Planner,
    outcome: EmbedOutcome,
    params: EmbedParams,
    name: str,
    rid: str,
    headers: dict[str, str],
) -> Response:
    answer = detect_answer(planner, outcome, params.request_options(), params.format, name, rid)
    return Response(answer.body, 200, headers, answer.media_type)


def deferred_response(outcome: DeferredOutcome) -> Response:
    return queued_response(outcome.job, outcome.reason)


def queued_response(job: JobRecord, reason: str) -> Response:
    """202 with the job's id and where to poll it."""
    body = DeferredResponse(
        job_id=job.job_id,
        status=job.status.value,
        status_url=f"/jobs/{job.job_id}",
        reason=reason,
        submitted_at=job.submitted_at,
    )
    headers = {"Location": body.status_url, "X-Job-ID": job.job_id}
    return Response(body.model_dump_json(), 202, headers, "application/json")
