"""The partner HTTP API's contract, apart from the embedding body itself.

The ``/embed`` form is :class:`EmbedParams`, used by the endpoint directly as FastAPI's form
model, so its limits are declared once and the OpenAPI document shows exactly them. The
embedding body (:class:`~sevensense.outputs.response.EmbedResponse`) lives below, in
``outputs``, because the worker stores the same body for deferred jobs (so does the
``/detect`` body, :class:`~sevensense.outputs.detect_response.DetectResponse`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from sevensense.agile.bulk import ApplyFormat, DensityFormat, default_formats
from sevensense.agile.store import ClassifierManifest
from sevensense.agile.train import TrainOptions
from sevensense.agile.workflow import ReviewWindow, ScoreHistogram
from sevensense.archive.submit import SubmitReport
from sevensense.embeddings.quality import QualityReport
from sevensense.index.annotations import MAX_WINDOW_ID, Annotation, AnnotationIn
from sevensense.jobs.records import ApplyJobResult, JobProgress, TrainJobResult
from sevensense.outputs.detect_response import DetectResponse
from sevensense.outputs.formats import MAX_SENSITIVITY, MIN_SENSITIVITY, TEXT_FORMATS
from sevensense.outputs.response import EmbedResponse
from sevensense.planning.options import MAX_OVERLAP, RequestOptions
from sevensense.quality_gate.gate import GateOutcome
from sevensense.quality_gate.store import StoredCheck
from sevensense.serving.model_service.rpc import PrepareResult

Route = Literal["auto", "gpu", "cpu"]
Resampler = Literal["kaiser_fast", "linear", "medium", "high", "audiophile"]
OutputFormat = Literal["json", "arrow", "raven", "audacity", "csv", "kaleidoscope"]


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
    verify: bool = Field(
        False,
        description="cross-check every window against BirdNET v2.4: its top 5, the top-5 "
        "agreement (or null with the reason), discrepancies; never fails the request",
    )
    format: OutputFormat | None = Field(
        None,
        description="json or arrow (when absent, arrow if the Accept header asks for it); "
        "raven, audacity, csv, kaleidoscope: detections in BirdNET-Analyzer 2.4.0's files",
    )
    recording_id: str | None = Field(
        None, max_length=256, description="routing key: every retry of it hits the same version"
    )
    min_conf: float = Field(
        0.25, ge=0.0, le=1.0, description="detections: lowest score reported (unless top_k)"
    )
    sensitivity: float = Field(
        1.0,
        ge=MIN_SENSITIVITY,
        le=MAX_SENSITIVITY,
        description="detections: BirdNET's sigmoid sensitivity (higher finds more)",
    )
    merge_consecutive: int = Field(
        1,
        ge=0,
        le=1000,
        description="detections: merge up to N consecutive detections of a species (0, 1: off)",
    )
    resampler: Resampler | None = Field(
        None,
        description="kaiser_fast: BirdNET-Analyzer's resampling (resampy; the default for "
        "detections); high: soxr HQ (the default for embeddings)",
    )
    classifier: str | None = Field(
        None,
        max_length=130,
        pattern=r"^[a-z0-9][a-z0-9._-]*(:[a-z0-9][a-z0-9._-]*)?$",
        description="a custom classifier, name[:version], trained on this model's space: its "
        "classes' scores per window (windows[].custom)",
    )
    _detect: bool = PrivateAttr(False)  # set by /detect: BirdNET-Analyzer's rules apply
    _tenant: str | None = PrivateAttr(None)  # whose classifiers it may name (the route sets it)
    lat: float | None = Field(None, ge=-90.0, le=90.0, description="species filter: latitude")
    lon: float | None = Field(None, ge=-180.0, le=180.0, description="species filter: longitude")
    week: int = Field(
        -1, ge=-1, le=48, description="species filter: week 1-48 as BirdNET counts it; -1 all year"
    )
    sf_thresh: float = Field(
        0.03, gt=0.0, lt=1.0, description="species filter: lowest range-model score kept"
    )
    species: str | None = Field(
        None,
        max_length=262_144,
        description="species filter: allowed species, Scientific_Common or scientific names, "
        "one per line or comma-separated (instead of lat/lon)",
    )
    reduce: str | None = Field(
        None,
        max_length=160,
        pattern=r"^[a-z0-9][a-z0-9._-]*(:[a-z0-9][a-z0-9._-]*)?$",
        description="PCA reducer name[:version] fitted for the serving model "
        "(`sevensense reduce fit`); embeddings come back reduced and re-normalised",
    )
    project: Literal["poincare"] | None = Field(
        None, description="poincare: the exponential map onto the Poincaré ball (ADR-007 §3.3)"
    )
    curvature: float = Field(
        1.0,
        ge=-1e3,
        le=1e3,
        description="projection: the ball's curvature -c; c = |curvature|, so -1 and 1 agree",
    )
    max_norm: float = Field(
        0.999, gt=0.0, lt=1.0, description="projection: norm clamp, as a fraction of the radius"
    )
    index: bool = Field(
        False,
        description="also store the windows in the similarity index (`POST /search`), under "
        "this key's tenant and `recording_id` (else the file name); idempotent per window",
    )
    site: str | None = Field(None, max_length=256, description="index: site or deployment")
    recorded_at: datetime | None = Field(None, description="index: when the recording started")

    @model_validator(mode="after")
    def _filter_is_one_thing(self) -> EmbedParams:
        if self.week == 0:
            raise ValueError("week 0 does not exist: 1-48, or -1 for all year")
        if (self.lat is None) != (self.lon is None):
            raise ValueError("lat and lon go together")
        if self.lat is not None and self.species is not None:
            raise ValueError("give lat/lon or species, not both")
        if self.curvature == 0.0:
            raise ValueError("curvature 0 is flat space, not a Poincaré ball")
        return self

    def species_names(self) -> list[str] | None:
        if self.species is None:
            return None
        return [n.strip() for n in self.species.replace(",", "\n").splitlines() if n.strip()]

    def request_options(self) -> RequestOptions:
        """The fields the planner reads; detections (``/detect``, a BirdNET format) need
        every class's score."""
        names = self.species_names()
        return RequestOptions(
            model=self.model,
            overlap=self.overlap,
            hop_s=self.hop_s,
            top_k=self.top_k,
            include_logits=self.include_logits,
            include_spectrogram=self.include_spectrogram,
            lat=self.lat,
            lon=self.lon,
            week=self.week,
            sf_thresh=self.sf_thresh,
            species=tuple(names) if names is not None else None,
            reduce=self.reduce,
            project=self.project,
            curvature=self.curvature,
            max_norm=self.max_norm,
            min_conf=self.min_conf,
            sensitivity=self.sensitivity,
            merge_consecutive=self.merge_consecutive,
            resampler=self.resampler,
            detect=self._detect or self.format in TEXT_FORMATS,
            classifier=self.classifier,
            tenant=self._tenant,
        )

    @property
    def classifier_tenant(self) -> str | None:
        return self._tenant

    def for_tenant(self, tenant: str | None) -> Self:
        """These fields for a caller who may use ``tenant``'s classifiers (None: any)."""
        copy = self.model_copy()
        copy._detect = self._detect
        copy._tenant = tenant
        return copy

    def for_detections(self) -> EmbedParams:
        """These fields as ``/detect`` plans them: every class's score, BirdNET-Analyzer's
        resampling and segment rule."""
        copy = self.model_copy(update={"include_logits": True})
        copy._detect = True
        return copy


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
    result: EmbedResponse | DetectResponse | TrainJobResult | ApplyJobResult | None = Field(
        None,
        description="inlined when small enough: embeddings, a /detect's detections, a trained "
        "classifier, or a classifier apply's summary and files",
    )
    result_text: str | None = Field(
        None, description="a /detect with format=raven|audacity|csv|kaleidoscope: the file, inlined"
    )
    result_media_type: str | None = Field(None, description="the stored result's media type")
    result_kind: str = Field(description="embed, detect, classifier or apply")
    progress: JobProgress | None = Field(None, description="a running agile job's progress")
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
    quality_checks: dict[str, StoredCheck] = Field(
        default_factory=dict,
        description="ADR-007 Appendix B results stored beside each artifact (by identity), "
        "with admin overrides of the rollout gate",
    )


class ModelList(BaseModel):
    default_model: str
    models: list[ModelInfo]


class ActivateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1, max_length=64)
    variant: str | None = Field(None, max_length=64)
    force: bool = Field(
        False, description="take traffic despite a failed Appendix B check (recorded)"
    )


class TrafficRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weights: dict[str, float] = Field(description="version -> weight (any scale, e.g. 90/10)")
    variant: str | None = Field(None, max_length=64)
    force: bool = Field(
        False, description="take traffic despite a failed Appendix B check (recorded)"
    )


class RolloutResponse(BaseModel):
    model: str
    variant: str
    traffic: dict[str, float]
    prepared: dict[str, list[PrepareResult]] = Field(
        default_factory=dict, description="path -> versions loaded and warmed"
    )
    quality: list[GateOutcome] = Field(
        default_factory=list, description="the Appendix B gate, per version given traffic"
    )


class QualityAnswer(BaseModel):
    """``GET /quality``: the embedding-quality monitor of the gateway process that answered
    (each process keeps its own; Prometheus has every process's, labelled by pid)."""

    pid: int
    models: list[QualityReport]


class SearchParams(BaseModel):
    """``POST /search`` form fields: the query is an uploaded recording (each window a query,
    or the one at ``window``) or ``embedding``, a JSON array of numbers."""

    model_config = ConfigDict(extra="ignore")

    embedding: str | None = Field(
        None, max_length=262_144, description="a query vector as a JSON array (instead of audio)"
    )
    window_id: int | None = Field(
        None,
        ge=0,
        le=MAX_WINDOW_ID,
        description="an indexed window of the caller's as the query (its space's)",
    )
    index: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="index name (default: the service's)",
    )
    model: str | None = Field(
        None,
        max_length=128,
        description="audio: the model that embeds it (as /embed); embedding: name:version of "
        "the space (optional when the index has one space)",
    )
    reduce: str | None = Field(
        None, max_length=160, pattern=r"^[a-z0-9][a-z0-9._-]*(:[a-z0-9][a-z0-9._-]*)?$"
    )
    project: Literal["poincare"] | None = None
    curvature: float = Field(1.0, ge=-1e3, le=1e3)
    max_norm: float = Field(0.999, gt=0.0, lt=1.0)
    transform: str | None = Field(
        None, max_length=200, description="embedding: the space's transform key (default full)"
    )
    k: int = Field(10, ge=1, le=1000)
    window: int | None = Field(None, ge=0, description="audio: search with this window only")
    overlap: float | None = Field(None, ge=0.0, le=MAX_OVERLAP)
    metric: Literal["cosine", "poincare"] | None = Field(
        None, description="cosine, or poincare (cosine candidates re-ranked on the ball)"
    )
    recording_prefix: str | None = Field(None, max_length=1024)
    site: str | None = Field(None, max_length=256)
    time_from: datetime | None = None
    time_to: datetime | None = None


class SearchNeighbour(BaseModel):
    recording_id: str
    start_s: float
    end_s: float
    score: float = Field(description="cosine similarity, or 1/(1+d) for the Poincaré distance d")
    distance: float
    model_name: str
    model_version: str
    site: str | None = None
    time: datetime | None = None


class SearchQuery(BaseModel):
    window: int | None = Field(description="the query window (None for a vector query)")
    start_s: float | None = None
    end_s: float | None = None
    neighbours: list[SearchNeighbour]


class SearchResponse(BaseModel):
    index: str
    space: str
    model_name: str
    model_version: str
    metric: Literal["cosine", "poincare"]
    k: int
    queries: list[SearchQuery]
    request_id: str


class DeleteRecordingResponse(BaseModel):
    index: str
    recording_id: str
    deleted: int = Field(description="windows deleted, across all the index's spaces")


# --- agile modeling: annotations and classifiers (issue 26) -------------------------------


class SpaceRef(BaseModel):
    """Which space of which index: as ``/search`` with a vector names it."""

    model_config = ConfigDict(extra="forbid")

    index: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    model: str | None = Field(None, max_length=128, description="name[:version] of the space")
    transform: str | None = Field(None, max_length=200)


class AnnotationsRequest(SpaceRef):
    annotations: list[AnnotationIn] = Field(min_length=1, max_length=10_000)


class AnnotationsResponse(BaseModel):
    index: str
    space: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    annotations: list[Annotation] = Field(default_factory=list)
    request_id: str


class ClassifierTrainRequest(SpaceRef):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    labels: list[str] | None = Field(None, max_length=1000, description="default: every label")
    options: TrainOptions = Field(default_factory=TrainOptions)


class ClassifierApplyRequest(SpaceRef):
    formats: list[ApplyFormat] = Field(
        default_factory=default_formats,
        min_length=1,
        description="scores (scores.parquet) and/or BirdNET-Analyzer detection formats",
    )
    min_conf: float = Field(0.5, ge=0.0, le=1.0, description="a detection's threshold")
    density: DensityFormat | None = Field(None, description="also write call density tables")


class ClassifierResponse(BaseModel):
    classifier: str
    manifest: ClassifierManifest
    request_id: str


class ClassifierListResponse(BaseModel):
    classifiers: list[ClassifierManifest]


class HistogramResponse(ScoreHistogram):
    classifier: str
    space: str
    request_id: str


class ReviewResponse(BaseModel):
    classifier: str
    space: str
    label: str
    mode: str
    windows: list[ReviewWindow]
    request_id: str


class ArchiveSubmitRequest(BaseModel):
    """``POST /admin/batch/submissions``: what ``sevensense batch submit`` takes."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="s3://bucket/prefix of the archive")
    inventory: str | None = Field(None, description="an S3 Inventory manifest.json (CSV)")
    per_message: int = Field(1, ge=1, le=100, description="objects per queue message")
    dry_run: bool = False


class ArchiveSubmission(BaseModel):
    submission_id: str
    status_url: str
    report: SubmitReport
