"""Labels on indexed windows (agile modeling): which windows hold a call type, which do not.

An annotation names one window of one space by its window id, or a recording and a time
span that is resolved to the windows it covers (see :func:`covers`); it is stored once per
(window, label, provenance): labelling again with the same type changes nothing, with
another type replaces the type. Tenancy follows the window: a caller labels, lists and
deletes only its tenant's windows; a window of another tenant is "not found".

On the hoplite backend annotations are rows of perch-hoplite 1.0.2's own ``annotations``
table (recording row, the window's ``offsets``, label, ``label_type`` 0/1/2 as its
``LabelType``, provenance), so its ``DataManager`` trains on them. On pgvector they live in
one table, ``sevensense_annotations``, keyed by index, space and window id.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sevensense.errors import RequestError, WindowNotFoundError
from sevensense.index.base import VectorIndex
from sevensense.index.records import Scope, SpaceKey

LabelTypeName = Literal["positive", "negative", "uncertain"]
MAX_LABEL = 128
MAX_WINDOW_ID = 2**63 - 1  # window and annotation ids are SQL BIGINTs on both backends


class LabelType(IntEnum):
    """perch-hoplite's ``LabelType`` values, stored as they are."""

    negative = 0
    positive = 1
    uncertain = 2


class AnnotationIn(BaseModel):
    """One label to store: a window by id, or a recording and a span."""

    model_config = ConfigDict(extra="forbid")

    window_id: int | None = Field(None, ge=0, le=MAX_WINDOW_ID)
    recording_id: str | None = Field(None, min_length=1, max_length=1024)
    start_s: float | None = Field(None, ge=0.0)
    end_s: float | None = Field(None, ge=0.0)
    label: str = Field(min_length=1, max_length=MAX_LABEL)
    type: LabelTypeName = "positive"
    provenance: str = Field("api", min_length=1, max_length=256)

    @model_validator(mode="after")
    def _target(self) -> AnnotationIn:
        by_span = self.recording_id is not None
        if (self.window_id is None) == (not by_span):
            raise ValueError("name a window_id, or a recording_id with start_s and end_s")
        if by_span and (self.start_s is None or self.end_s is None):
            raise ValueError("a recording_id needs start_s and end_s")
        if by_span and self.end_s is not None and self.end_s <= (self.start_s or 0.0):
            raise ValueError("end_s must be after start_s")
        return self


class Annotation(BaseModel):
    id: int
    window_id: int
    recording_id: str
    start_s: float
    end_s: float
    label: str
    type: LabelTypeName
    provenance: str
    tenant: str


class AnnotateResult(BaseModel):
    added: int
    updated: int
    unchanged: int
    annotations: list[Annotation]


@dataclass(frozen=True)
class IndexedWindow:
    window_id: int
    recording_id: str
    source: str
    tenant: str
    start_s: float
    end_s: float


def covers(w_start: float, w_end: float, start: float, end: float) -> bool:
    """A span labels a window it overlaps by at least half the shorter of the two: a short
    call inside a window labels it, a long selection labels the windows mostly inside it."""
    overlap = min(w_end, end) - max(w_start, start)
    return overlap > 0 and overlap >= 0.5 * min(w_end - w_start, end - start) - 1e-9


class AnnotationStore(Protocol):
    def windows(
        self, key: SpaceKey, scope: Scope, ids: list[int] | None = None
    ) -> list[IndexedWindow]:
        """The scope's windows (those of ``ids`` only, when given), by window id."""
        ...

    def vectors(self, key: SpaceKey, ids: np.ndarray) -> np.ndarray: ...

    def annotate(self, key: SpaceKey, items: list[AnnotationIn], scope: Scope) -> AnnotateResult:
        """``WindowNotFoundError`` (404) when an item names no window of the scope."""
        ...

    def annotations(
        self, key: SpaceKey, scope: Scope, label: str | None = None
    ) -> list[Annotation]: ...

    def delete(
        self, key: SpaceKey, scope: Scope, ids: list[int] | None = None, label: str | None = None
    ) -> int: ...


def annotation_store(index: VectorIndex) -> AnnotationStore:
    """The store beside an open index, on its backend."""
    if index.backend == "pgvector":
        from sevensense.index.pg_annotations import PgAnnotations

        return PgAnnotations(index)
    from sevensense.index.hoplite_annotations import HopliteAnnotations

    return HopliteAnnotations(index)


def _resolve(
    item: AnnotationIn, windows: list[IndexedWindow], by_id: dict[int, IndexedWindow]
) -> list[IndexedWindow]:
    if item.window_id is not None:
        found = by_id.get(item.window_id)
        if found is None:
            raise WindowNotFoundError(
                f"no window {item.window_id} in this space for this key", window_id=item.window_id
            )
        return [found]
    assert item.start_s is not None and item.end_s is not None
    hits = [
        w
        for w in windows
        if w.recording_id == item.recording_id
        and covers(w.start_s, w.end_s, item.start_s, item.end_s)
    ]
    if not hits:
        raise WindowNotFoundError(
            f"no indexed window of recording {item.recording_id!r} covers "
            f"{item.start_s:g}-{item.end_s:g} s for this key",
            recording_id=item.recording_id,
        )
    return hits


def plan_items(
    items: list[AnnotationIn], windows: list[IndexedWindow]
) -> list[tuple[IndexedWindow, AnnotationIn]]:
    """Every (window, item) to store, duplicates within the request dropped (last wins)."""
    if not items:
        raise RequestError("no annotations given")
    by_id = {w.window_id: w for w in windows}
    planned: dict[tuple[int, str, str], tuple[IndexedWindow, AnnotationIn]] = {}
    for item in items:
        for w in _resolve(item, windows, by_id):
            planned[(w.window_id, item.label, item.provenance)] = (w, item)
    return list(planned.values())
