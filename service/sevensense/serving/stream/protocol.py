"""The live-stream contract of ``WS /stream``: every message either side may send, and the
close codes, defined once for the server, the reference client and the docs.

A conversation: the client sends ``open`` (JSON text), then binary frames of raw PCM of any
size, then ``end``. The server answers ``ready``, then a ``window`` message per window as
soon as the model returns it (``skipped`` for windows gated as silent, ``throttle`` when the
client runs ahead of the speed bound), and ``summary`` after ``end``; then it closes with
1000. A failure is an ``error`` message followed by a close whose code is 4000 + the HTTP
status the same failure gets on ``POST /embed`` (4401, 4403, 4404, 4408, 4409, 4413, 4422,
4429, 4503), or 1011 for an unexpected server error.

Resumption: every ``ready`` and ``window`` message carries a ``resume_token``. A client
whose connection drops opens again with the stream's ``stream_id``, the start_sample of the
last window it received (``last_window``) and the token that came with it; the task it
reaches continues the stream, from its memory if it holds it, else from the token and the
client's audio (:mod:`.resume`). An entry task that is stopping sends ``reconnect`` to each
open stream and closes it with 1012 (service restart): resume elsewhere at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from sevensense.artifacts.manifest import ModelIdentity
from sevensense.audio.bounds import MIN_SAMPLE_RATE_HZ
from sevensense.audio.encoding import SampleEncoding
from sevensense.errors import SevensenseError
from sevensense.outputs.response import WindowJSON
from sevensense.serving.schemas import EmbedParams
from sevensense.verification.agreement import (
    AgreementSummary,
    RequestVerification,
    WindowVerification,
)

PATH = "/stream"
NORMAL_CLOSE = 1000
RESTART_CLOSE = 1012  # the task is stopping: resume elsewhere (RFC 6455 "service restart")
INTERNAL_CLOSE = 1011
STREAM_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


def close_code(exc: SevensenseError | None) -> int:
    """4000 + the error's HTTP status: a partner maps both faces' errors with one table."""
    if exc is None:
        return INTERNAL_CLOSE
    return 4000 + exc.http_status if exc.http_status < 500 or exc.http_status == 503 else 1011


class StreamOpen(EmbedParams):
    """The opening message: how the audio is encoded, the stream's identity, and the same
    options as ``POST /embed`` (model, overlap/hop, top_k, species filter, verify, index)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["open"]
    api_key: str | None = Field(
        None, max_length=256, description="or the X-API-Key / Authorization header on the upgrade"
    )
    sample_rate: int = Field(
        ge=1,
        description="of the PCM frames, Hz; within the work bounds every face applies "
        f"(at least {MIN_SAMPLE_RATE_HZ} Hz, at most 24x from the model's rate), else "
        "unsupported_sample_rate",
    )
    channels: int = Field(1, ge=1, le=32, description="interleaved; averaged to mono")
    encoding: SampleEncoding = Field(
        SampleEncoding.S16LE, description="s16le (16-bit PCM) or f32le (32-bit float PCM)"
    )
    stream_id: str | None = Field(
        None,
        pattern=STREAM_ID_PATTERN,
        description="the stream's name for resumption and the index; the server picks one "
        "when absent",
    )
    resume_from: int | None = Field(
        None,
        ge=0,
        description="resume stream_id: the sample offset (per channel, at sample_rate) of the "
        "first frame this connection sends",
    )
    last_window: int | None = Field(
        None,
        ge=-1,
        description="resume: start_sample of the last window result received; later ones "
        "the server still holds are sent again",
    )
    last_verified: int | None = Field(
        None,
        ge=-1,
        description="resume, verify=true: start_sample of the last verification received "
        "(-1: none); later ones are sent again, from memory or, on a task that rebuilds the "
        "stream, computed again from the audio sent from received_frames",
    )
    resume_token: str | None = Field(
        None,
        max_length=4096,
        description="resume: the token of the last window (or ready) received; lets any "
        "entry task continue the stream",
    )
    include_embedding: bool = Field(True, description="false: windows carry species only")

    @property
    def resuming(self) -> bool:
        return any(
            v is not None
            for v in (self.resume_from, self.last_window, self.last_verified, self.resume_token)
        )

    @model_validator(mode="after")
    def _stream_options(self) -> StreamOpen:
        if self.format not in (None, "json"):
            raise ValueError("a stream answers in JSON messages; format must be json")
        if self.resuming and not self.stream_id:
            raise ValueError(
                "resume_from, last_window, last_verified and resume_token need the stream_id"
            )
        return self


class StreamEnd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["end"]


ClientMessage = TypeAdapter(Annotated[StreamOpen | StreamEnd, Field(discriminator="type")])


class StreamLimits(BaseModel):
    max_frame_bytes: int
    max_speed: float = Field(description="audio per wall second, × real time, after burst_s")
    burst_s: float
    resume_ttl_s: float
    replay_windows: int


class StreamReady(BaseModel):
    type: Literal["ready"] = "ready"
    stream_id: str
    resumed: bool
    received_frames: int = Field(
        description="samples per channel the server holds: send from here (a resume may "
        "start earlier; what the server already has is skipped)"
    )
    replayed: int = Field(0, description="window results sent again after a resume")
    rebuilt: bool = Field(
        False,
        description="resumed on a task that did not hold the stream: its state was rebuilt "
        "from the token and the audio sent from received_frames",
    )
    resume_token: str = Field(description="resume with this until a window brings a newer one")
    task: str = Field(description="the entry task and worker answering (host:pid), for logs")
    model: ModelIdentity
    sample_rate: int = Field(description="the model's rate: start_sample counts in it")
    window_s: float
    hop_s: float
    embedding_dim: int
    limits: StreamLimits
    verification: RequestVerification | None = Field(
        None,
        description="verify=true: the verifier, or why nothing is compared (the model is "
        "BirdNET itself, verification disabled, verifier unavailable)",
    )


class StreamWindow(WindowJSON):
    type: Literal["window"] = "window"
    stream_id: str
    start_sample: int = Field(description="at the model's rate: the window's identity")
    start_at: datetime | None = Field(None, description="recorded_at + start_s, when given")
    end_at: datetime | None = None
    latency_ms: float = Field(description="window's last sample received → this message sent")
    resume_token: str = Field(description="resume with this after a drop")


class StreamSkipped(BaseModel):
    type: Literal["skipped"] = "skipped"
    stream_id: str
    index: int
    start_s: float
    end_s: float
    reason: str


class StreamThrottle(BaseModel):
    type: Literal["throttle"] = "throttle"
    ahead_s: float = Field(description="audio seconds received beyond the speed bound")
    wait_s: float = Field(description="the server reads nothing more for this long")
    max_speed: float


class StreamSummary(BaseModel):
    type: Literal["summary"] = "summary"
    stream_id: str
    model: ModelIdentity
    windows: int
    skipped: int
    duration_s: float = Field(description="audio received, whole stream")
    frames: int = Field(description="binary messages received, whole stream")
    bytes: int
    throttles: int
    resumes: int
    indexed: int | None = None
    latency_ms_p50: float | None = None
    latency_ms_p99: float | None = None
    verification: AgreementSummary | None = Field(
        None, description="verify=true: agreement with BirdNET over the whole stream"
    )


class StreamVerification(BaseModel):
    """verify=true: BirdNET's view of one window, sent once the BirdNET windows centred in
    it are answered (up to half a BirdNET window of audio after the window itself)."""

    type: Literal["verification"] = "verification"
    stream_id: str
    index: int
    start_sample: int
    verification: WindowVerification


class StreamReconnect(BaseModel):
    """The task is stopping (scale-in, deploy): resume now, the load balancer sends the
    reconnect to another task. Sent after every window cut so far is answered; the close
    (1012) follows."""

    type: Literal["reconnect"] = "reconnect"
    stream_id: str
    reason: str
    last_window: int = Field(description="start_sample of the last window answered, -1: none")
    resume_token: str


class StreamError(BaseModel):
    type: Literal["error"] = "error"
    code: str
    message: str
    close_code: int
    details: dict[str, Any] | None = None
