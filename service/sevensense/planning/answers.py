"""A recording's detections answer, JSON or one of BirdNET-Analyzer's files: one builder for
the live ``/detect`` and the worker's deferred one, so the two cannot drift apart."""

from __future__ import annotations

from dataclasses import dataclass

from sevensense.audio.quality_levels import describe_resampler
from sevensense.outputs.detect_response import DetectionJSON, DetectResponse
from sevensense.outputs.detections import MEDIA_TYPES, AnalysisParams, custom_detections, render
from sevensense.outputs.formats import TEXT_FORMATS
from sevensense.outputs.response import EmbedOutcome
from sevensense.planning.options import RequestOptions
from sevensense.planning.plan import Planner

JSON_MEDIA_TYPE = "application/json"


@dataclass
class DetectAnswer:
    body: str
    media_type: str


def detect_answer(
    planner: Planner,
    outcome: EmbedOutcome,
    options: RequestOptions,
    fmt: str | None,
    name: str,
    request_id: str,
) -> DetectAnswer:
    """``fmt``: a BirdNET-Analyzer format (``TEXT_FORMATS``), else JSON; ``name``: the
    recording's name in the file's path column."""
    artifact = outcome.artifact
    detections = planner.detections(artifact, outcome.species, options)
    collector = detections.collector()
    for result in outcome.results:
        collector.add(result)
    stats = outcome.stats
    rate = stats.info.sample_rate if stats.info else artifact.manifest.sample_rate
    rec = collector.recording("upload", stats.duration_s, rate, path=name)
    if outcome.classifier is not None:  # its classes are detections like the model's
        rec.detections = custom_detections(rec.detections, outcome.results, options.min_conf)
    if fmt in TEXT_FORMATS:
        located = options.lat is not None and options.lon is not None
        analysis = AnalysisParams(
            lat=options.lat if located and options.lat is not None else -1,
            lon=options.lon if located and options.lon is not None else -1,
            week=options.week if located else -1,
            overlap=round(outcome.window_s - outcome.hop_s, 4),
            sensitivity=options.sensitivity,
            merge_consecutive=options.merge_consecutive,
        )
        text = render(fmt, [rec], codes=detections.codes, params=analysis)
        return DetectAnswer(text, MEDIA_TYPES[fmt])
    body = DetectResponse(
        request_id=request_id,
        model=artifact.manifest.identity,
        duration_s=stats.duration_s,
        min_conf=options.min_conf,
        top_k=options.top_k or None,
        sensitivity=options.sensitivity,
        merge_consecutive=options.merge_consecutive,
        resampler=describe_resampler(outcome.resampler),
        species_filter=outcome.species_filter,
        windows=len(outcome.results),
        classifier=outcome.classifier,
        verification=outcome.verification,
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
    return DetectAnswer(body.model_dump_json(exclude_none=True), JSON_MEDIA_TYPE)
