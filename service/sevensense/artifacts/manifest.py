"""The manifest that travels next to every ``model.onnx``: what the file is and promises.

Outputs are mapped by *role* to tensor names because exports disagree on order (the real
Perch 2.0 export lists ``embedding, spatial_embedding, spectrogram, label``, not the order
ADR-007 §2.2 assumes); code asks for a role and gets the tensor with that name.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sevensense.audio.normalize import NormalizationSpec
from sevensense.errors import ManifestError

MANIFEST_NAME = "manifest.json"
MODEL_FILE = "model.onnx"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")

# "audio" models turn sound windows into embeddings; "range" models turn (lat, lon, week)
# into per-species occurrence scores and must never be offered where audio is embedded.
ModelKind = Literal["audio", "range"]


class OutputRole(StrEnum):
    EMBEDDING = "embedding"
    LOGITS = "logits"
    SPECTROGRAM = "spectrogram"
    SPATIAL_EMBEDDING = "spatial_embedding"
    OCCURRENCE = "occurrence"


Dim = int | str


class TensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[Dim]
    dtype: Literal["float32", "float16"] = "float32"


class LabelsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str = Field(description="path relative to the artifact directory, or package:NAME")
    format: Literal["birdnet_txt", "csv_index_label", "plain"]
    count: int = Field(gt=0)


class ModelIdentity(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    variant: str

    def __str__(self) -> str:
        return f"{self.name}:{self.version}:{self.variant}"


class ModelManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    kind: ModelKind = "audio"
    name: str
    version: str
    variant: str = "base"
    description: str = ""
    sha256: str | None = Field(
        None, description="hex digest; None only for a catalogue entry whose digest is unknown"
    )
    sha256_hint: str | None = Field(
        None,
        description="a published partial digest, 'prefix…suffix', checked when sha256 is unknown",
    )
    size_bytes: int = Field(gt=0)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    source: str = ""
    input: TensorSpec
    sample_rate: int = Field(0, ge=0, description="audio models only; 0 for range models")
    window_samples: int = Field(0, ge=0, description="audio models only; 0 for range models")
    default_overlap: float = Field(0.0, ge=0.0, lt=1.0)
    outputs: dict[OutputRole, TensorSpec]
    labels: LabelsSpec | None = None
    normalization: NormalizationSpec = Field(default_factory=NormalizationSpec.raw)
    min_onnxruntime: str = "1.17.0"
    providers: list[str] = Field(
        default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    license: str
    test_artifact: bool = False
    quality: dict[str, float] = Field(
        default_factory=dict, description="measured figures, e.g. cosine to the base variant"
    )
    float_nodes: list[str] | None = Field(
        None, description="a reduced-precision variant's nodes kept in float32, by name"
    )

    @field_validator("name", "version", "variant")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(f"{value!r} must be lowercase letters, digits, '.', '_' or '-'")
        return value

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-f]{64}", value):
            raise ValueError("sha256 must be 64 lowercase hex digits")
        return value

    @model_validator(mode="after")
    def _fits_kind(self) -> ModelManifest:
        if self.kind == "audio":
            if OutputRole.EMBEDDING not in self.outputs:
                raise ValueError("a model must declare an 'embedding' output")
            if self.sample_rate <= 0 or self.window_samples <= 0:
                raise ValueError("an audio model needs a positive sample_rate and window_samples")
        else:
            if set(self.outputs) != {OutputRole.OCCURRENCE}:
                raise ValueError("a range model declares exactly one output, 'occurrence'")
            if self.sample_rate or self.window_samples:
                raise ValueError("a range model has no sample_rate or window_samples")
        return self

    @property
    def identity(self) -> ModelIdentity:
        return ModelIdentity(name=self.name, version=self.version, variant=self.variant)

    @property
    def embedding_dim(self) -> int:
        spec = self.outputs.get(OutputRole.EMBEDDING)
        if spec is None:
            raise ManifestError(f"{self.identity} is a {self.kind} model: it has no embedding")
        dim = spec.shape[-1]
        if not isinstance(dim, int):
            raise ManifestError(f"{self.identity}: embedding width must be static")
        return dim

    @property
    def n_classes(self) -> int | None:
        spec = self.outputs.get(OutputRole.LOGITS)
        width = spec.shape[-1] if spec is not None else None
        return width if isinstance(width, int) else None

    @property
    def window_seconds(self) -> float:
        if self.kind != "audio":
            raise ManifestError(f"{self.identity} is a {self.kind} model: it has no window")
        return self.window_samples / self.sample_rate

    def dump(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2, exclude_none=True) + "\n")


def load_manifest(path: Path) -> ModelManifest:
    try:
        return ModelManifest.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ManifestError(f"no manifest at {path}") from None
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ManifestError(f"invalid manifest {path}: {exc}", path=str(path)) from exc
