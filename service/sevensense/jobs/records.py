"""What a deferred request is on the queue and in the job store (wire formats).

The message carries a reference to the audio, never the audio: SQS caps messages at
256 KiB and the payload may be 100 MB. It also carries the exact model identity and the
resolved options, so the worker computes what the synchronous path would have computed
for that request even if the canary weights or the profile defaults change meanwhile.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sevensense.agile.bulk import ApplyFormat, DensityFormat, default_formats
from sevensense.agile.store import ClassifierManifest
from sevensense.agile.train import TrainOptions
from sevensense.errors import JobNotFoundError
from sevensense.index.records import SpaceKey
from sevensense.planning.options import RequestOptions

KIND: Literal["deferred_request"] = "deferred_request"
AGILE_KIND: Literal["agile_job"] = "agile_job"
ResultKind = Literal["embed", "detect", "classifier", "apply"]
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


def new_job_id() -> str:
    return uuid.uuid4().hex


def check_job_id(job_id: str) -> str:
    """Job ids become object keys: anything but 32 hex digits is refused, not looked up."""
    if not _JOB_ID.match(job_id):
        raise JobNotFoundError(f"no job {job_id!r}")
    return job_id


def now() -> datetime:
    return datetime.now(UTC)


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class IndexTarget(BaseModel):
    """Where an ``index=true`` request's windows go, decided by the gateway that took it
    (the tenant is its API key), so a deferred answer is indexed as a served one is."""

    model_config = ConfigDict(extra="forbid")

    tenant: str
    recording_id: str
    site: str | None = None
    recorded_at: datetime | None = None


class DetectRequest(BaseModel):
    """A deferred ``/detect`` (or ``/embed`` with a BirdNET format): what the worker needs to
    answer with detections, as the live route would."""

    model_config = ConfigDict(extra="forbid")

    options: dict[str, Any] = Field(description="the request's RequestOptions")
    format: str | None = Field(None, description="a BirdNET-Analyzer format, else JSON")
    name: str = Field("upload", description="the recording's name in the file's path column")

    @classmethod
    def of(cls, options: RequestOptions, fmt: str | None, name: str) -> DetectRequest:
        fields = dataclasses.asdict(options)
        fields["species_file"] = None  # a face-local path; the species names travel instead
        return cls(options=fields, format=fmt, name=name)

    def request_options(self) -> RequestOptions:
        fields = dict(self.options)
        if fields.get("species") is not None:
            fields["species"] = tuple(fields["species"])
        return RequestOptions(**fields)


class DeferredRequest(BaseModel):
    """The queue message body."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["deferred_request"] = KIND
    job_id: str
    payload_key: str
    model: str = Field(description="name:version:variant resolved by the gateway")
    options: dict[str, Any] = Field(description="EmbedOptions, resolved")
    filename: str | None = None
    submitted_at: datetime
    reason: str = ""
    trace: dict[str, str] = Field(default_factory=dict)
    transform: dict[str, Any] = Field(
        default_factory=dict,
        description="reduce, project, curvature, max_norm as the request gave them",
    )
    index: IndexTarget | None = None
    detect: DetectRequest | None = Field(None, description="answer with detections, not embeddings")
    verify: bool = Field(False, description="verify=true: cross-check with BirdNET")
    classifier: str | None = Field(
        None, description="classifier=, pinned to the version the gateway resolved"
    )
    classifier_tenant: str | None = Field(
        None, description="whose classifiers the request may name (None: any, an admin key)"
    )


class TrainTask(BaseModel):
    """``POST /classifiers`` over a scope too large to train while the caller waits."""

    model_config = ConfigDict(extra="forbid")

    name: str
    labels: list[str] | None = None
    options: TrainOptions = Field(default_factory=TrainOptions)


class ApplyTask(BaseModel):
    """``POST /classifiers/{ref}/apply``: a classifier over the scope's windows, as files."""

    model_config = ConfigDict(extra="forbid")

    classifier: str = Field(description="name:version, pinned by the gateway")
    formats: list[ApplyFormat] = Field(default_factory=default_formats, min_length=1)
    min_conf: float = Field(0.5, ge=0.0, le=1.0)
    density: DensityFormat | None = None


class AgileJob(BaseModel):
    """The queue message of an agile job: the index space and the tenant whose windows it
    works on (the submitting key's scope), and what to do there."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["agile_job"] = AGILE_KIND
    job_id: str
    index: str
    space: SpaceKey
    tenant: str | None = Field(description="the key's tenant; None: every tenant (admin)")
    train: TrainTask | None = None
    apply: ApplyTask | None = None
    submitted_at: datetime


class TrainJobResult(BaseModel):
    """A deferred ``POST /classifiers``'s answer: the registered version."""

    classifier: str
    manifest: ClassifierManifest


class JobFile(BaseModel):
    name: str = Field(description="the file's path in the output, as the CLI writes it")
    location: str = Field(description="where it is stored")
    url: str | None = Field(None, description="GET it here")


class ApplyJobResult(BaseModel):
    """A ``POST /classifiers/{ref}/apply``'s answer: what ``sevensense classifier apply``
    prints, and the files it wrote."""

    classifier: str
    space: str
    windows: int
    recordings: int
    detections: dict[str, int]
    files: list[JobFile]


class JobProgress(BaseModel):
    """How far a running job is: training steps, or windows scored."""

    stage: str
    done: int
    total: int


class JobRecord(BaseModel):
    """What ``GET /jobs/{id}`` reports; stored as ``jobs/<id>.json``."""

    job_id: str
    status: JobStatus
    owner: str = Field(description="API key id that submitted it; only it (or admin) reads it")
    model: str
    reason: str = Field("", description="why the request was deferred")
    submitted_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    payload_bytes: int = 0
    windows: int | None = None
    result_key: str | None = None
    result_location: str | None = None
    result_bytes: int | None = None
    result_kind: ResultKind = "embed"
    result_media_type: str = "application/json"
    error: dict[str, Any] | None = None
    progress: JobProgress | None = None
