"""The one interface both backends implement, so a deployment changes store by configuration
and never by code: the embedded perch-hoplite directory, or PostgreSQL with pgvector."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from sevensense.index.records import (
    EntryBatch,
    Metric,
    Neighbour,
    RecordingRef,
    Scope,
    SearchFilter,
    SpaceInfo,
    SpaceKey,
    SpaceStats,
)


class VectorIndex(Protocol):
    """A named index: one backend and the spaces it holds.

    Every call is scoped: a partner's ``Scope`` sees, and deletes, only its tenant's
    entries; ``Scope.everyone()`` (admins, operators) sees all."""

    backend: str
    name: str

    def ensure_space(self, info: SpaceInfo) -> SpaceInfo:
        """The space, created on first use; one of another width is refused."""
        ...

    def space(self, key: SpaceKey) -> SpaceInfo:
        """Raises ``IndexNotFoundError`` when the index or the space does not exist."""
        ...

    def spaces(self) -> list[SpaceInfo]: ...

    def add(self, info: SpaceInfo, batch: EntryBatch) -> int:
        """Adds the windows not already there (same recording, tenant and start); returns
        how many were new. Safe to repeat: a redelivered message adds nothing twice."""
        ...

    def search(
        self,
        key: SpaceKey,
        queries: np.ndarray,
        k: int,
        scope: Scope,
        flt: SearchFilter | None = None,
        metric: Metric = "cosine",
    ) -> list[list[Neighbour]]:
        """Neighbours per query row, best first. ``IndexEmptyError`` when the scope holds
        nothing in this space; a filter that matches nothing gives empty lists."""
        ...

    def delete_recording(self, recording_id: str, scope: Scope) -> int:
        """Deletes the recording's windows in every space (the scope's only); returns how
        many."""
        ...

    def recordings(self, key: SpaceKey) -> list[RecordingRef]:
        """Every recording of the space, all tenants (for reindexing)."""
        ...

    def drop_space(self, key: SpaceKey) -> None: ...

    def compact(self) -> dict[str, float]:
        """Fold what adds appended into the search structure and drop deleted vectors
        (seconds per space); a no-op where the store maintains itself."""
        ...

    def stats(self) -> list[SpaceStats]: ...

    def close(self) -> None: ...
