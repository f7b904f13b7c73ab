"""The internal contract between the gateway and the model services (GPU, CPU).

Arrays cross the service boundary as raw little-endian float32 bytes, not JSON lists: the
local graph pickles them (no copy through text), and a remote model service receives them
base64-encoded in JSON, which is still ~4x smaller and far faster than a list of floats.
Partners never see these types; their contract is :mod:`sevensense.serving.schemas`.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sevensense.agile.served_head import HeadRef
from sevensense.artifacts.manifest import ModelIdentity
from sevensense.serving.model_service.pending import note_arrival

PathName = Literal["gpu", "cpu", "verifier"]  # the verifier runs BirdNET only


class _Binary(BaseModel):
    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64", extra="forbid")


def to_bytes(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype="<f4").tobytes()


def from_bytes(data: bytes, shape: tuple[int, ...] | None = None) -> np.ndarray:
    array = np.frombuffer(data, dtype="<f4")
    return array.reshape(shape) if shape is not None else array


class WindowItem(_Binary):
    """One prepared window for one exact model version; items are batched across requests."""

    model: str = Field(description="name:version:variant, resolved by the gateway")
    samples: bytes
    logits: bool = False
    spectrogram: bool = False
    head: HeadRef | None = Field(None, description="a custom classifier to run on the embedding")
    sent_at: float = Field(0.0, description="wall clock at the gateway, for queue time")
    trace: dict[str, str] = Field(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        note_arrival(self)  # a model service's pending-windows count (pending.py)


class WindowOutput(_Binary):
    model: ModelIdentity
    provider: str
    embedding: bytes
    logits: bytes | None = None
    spectrogram: bytes | None = None
    custom: bytes | None = Field(None, description="the head's logits; None: not asked, or dead")
    batch_size: int
    queue_ms: float
    compute_ms: float
    head_ms: float = 0.0
    error: str | None = None
    head_error: dict[str, Any] | None = Field(
        None, description="the head failed (the error's JSON body); the embedding stands"
    )


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
    driver: str | None = Field(
        None, description="GPU service: the NVIDIA driver and the highest CUDA it supports"
    )
