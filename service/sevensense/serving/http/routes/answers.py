"""The answers of an upload other than embeddings: its detections (JSON, or the files
BirdNET-Analyzer writes) and the 202 of a deferred request."""

from typing import cast

from fastapi.responses import Response

from sevensense.audio.quality_levels import describe_resampler
from sevensense.outputs.detections import (
    MEDIA_TYPES,
    AnalysisParams,
    custom_detections,
    render,
)
from sevensense.outputs.formats import TEXT_FORMATS, DetectionFormat
from sevensense.outputs.response import EmbedOutcome
from sevensense.planning.plan import Planner
from sevensense.serving.dispatch.gateway import DeferredOutcome
from sevensense.serving.schemas import (
    DeferredResponse,
    DetectionJSON,
    DetectResponse,
    EmbedParams,
)


def detections_response(
    planner: Planner,
    outcome: EmbedOutcome,
    params: EmbedParams,
    name: str,
    rid: str,
    headers: dict[str, str],
) -> Response:
    artifact = outcome.artifact
    detections = planner.detections(artifact, outcome.species, params.request_options())
    collector = detections.collector()
    for result in outcome.results:
        collector.add(result)
    stats = outcome.stats
    rate = stats.info.sample_rate if stats.info else artifact.manifest.sample_rate
    rec = collector.recording("upload", stats.duration_s, rate, path=name)
    if outcome.classifier is not None:  # its classes are detections like the model's
        rec.detections = custom_detections(rec.detections, outcome.results, params.min_conf)
    if params.format in TEXT_FORMATS:
        fmt = cast(DetectionFormat, params.format)
        located = params.lat is not None and params.lon is not None
        analysis = AnalysisParams(
            lat=params.lat if located and params.lat is not None else -1,
            lon=params.lon if located and params.lon is not None else -1,
            week=params.week if located else -1,
            overlap=round(outcome.window_s - outcome.hop_s, 4),
            sensitivity=params.sensitivity,
            merge_consecutive=params.merge_consecutive,
        )
        text = render(fmt, [rec], codes=detections.codes, params=analysis)
        return Response(text, 200, headers, MEDIA_TYPES[fmt])
    body = DetectResponse(
        request_id=rid,
        model=artifact.manifest.identity,
        duration_s=stats.duration_s,
        min_conf=params.min_conf,
        top_k=params.top_k or None,
        sensitivity=params.sensitivity,
        merge_consecutive=params.merge_consecutive,
        resampler=describe_resampler(outcome.resampler),
        species_filter=outcome.species_filter,
        windows=len(outcome.results),
        classifier=outcome.classifier,
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
