"""Wire formats: between the gateway and the model services, and towards partners.

Arrays cross the service boundary as raw little-endian float32 bytes, not JSON lists: the
local graph pickles them (no copy through text), and a remote model service receives them
base64-encoded in JSON, which is still ~4x smaller and far faster than a list of floats.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sevensense.artifacts.manifest import ModelIdentity

PathName = Literal["gpu", "cpu"]
Route = Literal["auto", "gpu", "cpu"]
OutputFormat = Literal["json", "arrow"]

ARROW_MEDIA_TYPE = "application/vnd.apache.arrow.stream"


class _Binary(BaseModel):
    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64", extra="forbid")


def to_bytes(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype="<f4").tobytes()


def from_bytes(data: bytes, shape: tuple[int, ...] | None = None) -> np.ndarray:
    array = np.frombuffer(data, dtype="<f4")
    return array.reshape(shape) if shape is not None else array


# --- gateway → model service ---------------------------------------------------------------


class WindowItem(_Binary):
    """One prepared window for one exact model version; items are batched across requests."""

    model: str = Field(description="name:version:variant, resolved by the gateway")
    samples: bytes
    logits: bool = False
    spectrogram: bool = False
    sent_at: float = Field(0.0, description="wall clock at the gateway, for queue time")
    trace: dict[str, str] = Field(default_factory=dict)


class WindowOutput(_Binary):
    model: ModelIdentity
    provider: str
    embedding: bytes
    logits: bytes | None = None
    spectrogram: bytes | None = None
    batch_size: int
    queue_ms: float
    compute_ms: float
    error: str | None = None


class PrepareResult(BaseModel):
    """In-band errors: BentoML hides exception messages between services."""

    ref: str
    model: ModelIdentity | None = None
    provider: str | None = None
    load_ms: float = 0.0
    warm_ms: float = 0.0
    error: str | None = None
    error_code: str | None = None


class ModelServiceStatus(BaseModel):
    path: PathName
    ready: bool
    reason: str | None = None
    provider: str | None = None
    loaded: list[str] = Field(default_factory=list)


# --- partner API ---------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str
    details: dict[str, object] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class Species(BaseModel):
    label: str
    score: float = Field(description="sigmoid of the model's logit")


class WindowQuality(BaseModel):
    valid: bool
    raw_norm: float
    sparsity: float
    flags: list[str] = Field(default_factory=list)


class WindowJSON(BaseModel):
    index: int
    start_s: float
    end_s: float
    padded_samples: int
    embedding: list[float]
    top_k: list[Species] = Field(default_factory=list)
    quality: WindowQuality
    provider: str
    strategy: str = Field(
        description="what produced it: gpu, cpu, worker (a model path), quantized, cache, "
        "zero_vector (fallbacks; a zero vector is all zeros and flagged invalid)"
    )
    cache_similarity: float | None = Field(
        None, description="cache hits: 1.0 exact, else the audio similarity of the match"
    )
    logits: list[float] | None = None
    spectrogram: list[list[float]] | None = None


class SkippedJSON(BaseModel):
    index: int
    start_s: float
    end_s: float
    reason: str


class Timing(BaseModel):
    total_ms: float
    decode_ms: float
    resample_ms: float
    window_ms: float
    queue_ms: float = Field(description="mean per model call: waiting for a batch")
    infer_ms: float = Field(description="mean per model call: session.run")
    postprocess_ms: float


class EmbedResponse(BaseModel):
    request_id: str
    model: ModelIdentity
    route: str = Field(description="the path or strategy that served (last, if mixed)")
    providers: list[str]
    fallback: bool = Field(description="true when the preferred path failed and another served")
    strategies: dict[str, int] = Field(
        default_factory=dict, description="windows per strategy (see windows[].strategy)"
    )
    degraded: bool = Field(
        False, description="some windows come from a fallback strategy, not a full model path"
    )
    zero_vector_windows: int = Field(0, description="windows answered with a flagged zero vector")
    routing_key_hash: str
    duration_s: float
    source_sample_rate: int
    sample_rate: int
    window_s: float
    hop_s: float
    embedding_dim: int
    windows: list[WindowJSON]
    skipped: list[SkippedJSON] = Field(default_factory=list)
    timing: Timing


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
