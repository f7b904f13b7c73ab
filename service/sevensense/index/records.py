"""What an index holds and answers: its spaces, its entries, filters and neighbours.

An index *space* is one (model name, model version, transform) triple: vectors from two
model versions, or from a model with and without a reducer, are never compared, because
their axes mean different things (ADR-007 risks: "version embeddings with model version").
A named index is a backend plus the spaces it holds.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sevensense.errors import DimensionMismatchError, RequestError

Metric = Literal["cosine", "poincare"]
INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def check_index_name(name: str) -> str:
    if not INDEX_NAME.match(name):
        raise RequestError(
            f"invalid index name {name!r}: lower-case letters, digits, '_' and '-', "
            "at most 63, starting with a letter or digit"
        )
    return name


class SpaceKey(BaseModel):
    """Which vectors may be compared: one model version under one transform."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_name: str = Field(min_length=1, max_length=128)
    model_version: str = Field(min_length=1, max_length=64)
    transform: str = Field(
        "full", min_length=1, max_length=200, description="VectorTransform.space_key"
    )

    @property
    def slug(self) -> str:
        """Safe as a directory name and stable: the same key always maps to the same space."""
        parts = (self.model_name, self.model_version, self.transform)
        return "@".join(_UNSAFE.sub("_", p) for p in parts)

    def table_suffix(self, index_name: str) -> str:
        digest = hashlib.sha256(f"{index_name}\0{self.slug}".encode()).hexdigest()
        return digest[:20]

    def __str__(self) -> str:
        return f"{self.model_name}:{self.model_version}[{self.transform}]"


class SpaceInfo(BaseModel):
    """A space as stored: its key, width and how it is searched."""

    model_config = ConfigDict(extra="forbid")

    key: SpaceKey
    dim: int = Field(ge=1)
    metric: Metric = "cosine"
    curvature: float = 1.0
    model_variant: str = "base"
    sample_rate: int | None = None
    window_s: float | None = None
    hop_s: float | None = None
    transform: dict[str, Any] = Field(default_factory=dict)


class EntryMeta(BaseModel):
    """One window's bookkeeping. ``start_ms`` with the recording, tenant and space is the
    idempotency key: adding the same window twice stores it once."""

    model_config = ConfigDict(extra="forbid")

    recording_id: str = Field(min_length=1, max_length=1024)
    source: str = ""
    start_s: float = Field(ge=0.0)
    end_s: float = Field(ge=0.0)
    tenant: str = Field(min_length=1, max_length=64)
    site: str | None = Field(None, max_length=256)
    time: datetime | None = Field(None, description="when the recording started")

    @property
    def start_ms(self) -> int:
        return round(self.start_s * 1000)


@dataclass
class EntryBatch:
    """Windows to add, columnar: ``vectors[i]`` belongs to ``meta[i]``."""

    vectors: np.ndarray
    meta: list[EntryMeta] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.vectors = np.ascontiguousarray(np.atleast_2d(self.vectors), dtype=np.float32)
        if len(self.vectors) != len(self.meta):
            raise ValueError(f"{len(self.vectors)} vectors for {len(self.meta)} entries")

    def __len__(self) -> int:
        return len(self.meta)

    def check_dim(self, space: SpaceInfo) -> None:
        check_dim(self.vectors, space)


def check_dim(vectors: np.ndarray, space: SpaceInfo) -> None:
    width = int(vectors.shape[-1]) if vectors.size else space.dim
    if width != space.dim:
        raise DimensionMismatchError(
            f"vectors of width {width} for the space {space.key} of width {space.dim}",
            expected=space.dim,
            got=width,
            space=space.key.slug,
        )
    if not np.all(np.isfinite(vectors)):
        raise RequestError("vectors must be finite (no NaN or Inf)")


class SearchFilter(BaseModel):
    """Filters applied inside the search (before k is counted), on every backend alike."""

    model_config = ConfigDict(extra="forbid")

    recording_prefix: str | None = Field(None, max_length=1024)
    time_from: datetime | None = None
    time_to: datetime | None = None
    site: str | None = Field(None, max_length=256)

    @property
    def empty(self) -> bool:
        return not (self.recording_prefix or self.time_from or self.time_to or self.site)


class Scope(BaseModel):
    """Whose entries a call sees: one tenant's, or (admins) everyone's."""

    model_config = ConfigDict(frozen=True)

    tenant: str | None = Field(description="None = all tenants (admin)")

    @classmethod
    def everyone(cls) -> Scope:
        return cls(tenant=None)

    @classmethod
    def of(cls, tenant: str) -> Scope:
        return cls(tenant=tenant)


class Neighbour(BaseModel):
    """A search hit. ``score``: higher is nearer (cosine similarity, or 1/(1+d) for the
    Poincaré distance d); ``distance``: 1 - cosine, or d."""

    recording_id: str
    source: str
    start_s: float
    end_s: float
    score: float
    distance: float
    model_name: str
    model_version: str
    tenant: str
    site: str | None = None
    time: datetime | None = None


class RecordingRef(BaseModel):
    """A recording held in a space, with what is needed to embed it again (reindexing)."""

    recording_id: str
    source: str
    tenant: str
    site: str | None = None
    time: datetime | None = None
    windows: int = 0


class SpaceStats(BaseModel):
    index: str
    backend: str
    space: SpaceInfo
    entries: int
    recordings: int
    tenants: int
    size_bytes: int | None = None


def escape_like(prefix: str) -> str:
    """A prefix for ``LIKE ... ESCAPE '\\'``: its own % and _ match only themselves."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
