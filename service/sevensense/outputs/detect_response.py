"""The JSON body of ``/detect``, below the faces: the HTTP service answers it live and the
worker stores the same body for a deferred ``/detect``."""

from __future__ import annotations

from pydantic import BaseModel, Field

from sevensense.artifacts.manifest import ModelIdentity
from sevensense.verification.agreement import RequestVerification


class DetectionJSON(BaseModel):
    start_s: float
    end_s: float
    scientific_name: str
    common_name: str
    label: str = Field(description="the model's class label")
    confidence: float = Field(description="sigmoid score")


class DetectResponse(BaseModel):
    request_id: str
    model: ModelIdentity
    duration_s: float
    windows: int
    min_conf: float
    top_k: int | None = Field(None, description="when set: the best k per window, any score")
    sensitivity: float = 1.0
    merge_consecutive: int = 1
    resampler: str = Field(description="how the audio was resampled to the model's rate")
    species_filter: dict[str, object] | None = None
    detections: list[DetectionJSON]
    classifier: str | None = Field(
        None, description="classifier=…: its classes are detections too (label = the class)"
    )
    verification: RequestVerification | None = Field(
        None, description="verify=true: the request's agreement with BirdNET"
    )
