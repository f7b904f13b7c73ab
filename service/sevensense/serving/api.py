"""The partner HTTP API's contract, apart from the embedding body itself.

The ``/embed`` form is :class:`EmbedParams`, used by the endpoint directly as FastAPI's form
model, so its limits are declared once and the OpenAPI document shows exactly them. The
embedding body (:class:`~sevensense.outputs.response.EmbedResponse`) lives below, in
``outputs``, because the worker stores the same body for deferred jobs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sevensense.outputs.response import EmbedResponse
from sevensense.serving.model_rpc import PrepareResult

Route = Literal["auto", "gpu", "cpu"]
OutputFormat = Literal["json", "arrow"]

# A hop under a tenth of the window multiplies the work per second of audio without
# adding information.
MAX_OVERLAP = 0.9


class EmbedParams(BaseModel):
    """Per-request options, sent as multipart form fields next to the audio.

    Unknown fields are ignored (a recorder's script may send its own metadata); empty
    fields count as absent.
    """

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(
        None, max_length=128, description="name (canary-routed) or name:version[:variant] (pinned)"
    )
    route: Route = "auto"
    overlap: float | None = Field(None, ge=0.0, le=MAX_OVERLAP)
    hop_s: float | None = Field(None, gt=0.0, le=60.0, description="overrides overlap")
    top_k: int | None = Field(None, ge=0, le=100)
    include_logits: bool = False
    include_spectrogram: bool = False
    format: OutputFormat | None = Field(
        None, description="json or arrow; when absent, arrow if the Accept header asks for it"
    )
    recording_id: str | None = Field(
        None, max_length=256, description="routing key: every retry of it hits the same version"
    )


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str
    details: dict[str, object] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class DeferredResponse(BaseModel):
    """202 Accepted: the request is queued durably; poll ``status_url``."""

    job_id: str
    status: str
    status_url: str
    reason: str
    submitted_at: datetime


class JobResponse(BaseModel):
    job_id: str
    status: str = Field(description="queued, running, done or failed")
    model: str
    reason: str
    submitted_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int
    windows: int | None = None
    result_location: str | None = Field(None, description="where the full result is stored")
    result: EmbedResponse | None = Field(None, description="inlined when small enough")
    error: dict[str, object] | None = None


class VersionInfo(BaseModel):
    version: str
    variants: list[str]
    test_artifact: bool
    weight: float = Field(description="share of traffic in percent")
    active: bool


class ModelInfo(BaseModel):
    name: str
    default: bool
    active_version: str | None
    traffic: dict[str, float]
    variant: str
    versions: list[VersionInfo]


class ModelDetail(ModelInfo):
    manifests: dict[str, dict[str, object]]


class ModelList(BaseModel):
    default_model: str
    models: list[ModelInfo]


class ActivateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1, max_length=64)
    variant: str | None = Field(None, max_length=64)


class TrafficRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weights: dict[str, float] = Field(description="version -> weight (any scale, e.g. 90/10)")
    variant: str | None = Field(None, max_length=64)


class RolloutResponse(BaseModel):
    model: str
    variant: str
    traffic: dict[str, float]
    prepared: dict[str, list[PrepareResult]] = Field(
        default_factory=dict, description="path -> versions loaded and warmed"
    )
