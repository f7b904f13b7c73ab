"""What the HTTP routes do with the similarity index: store an ``/embed`` outcome under the
caller's tenant, answer ``/search``, delete a recording. Index calls block (SQLite, usearch,
PostgreSQL), so the routes run them in worker threads; indexes are opened once per process.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime

import numpy as np

from sevensense.artifacts.manifest import ModelManifest
from sevensense.embeddings.transform import VectorTransform
from sevensense.errors import RequestError, WindowNotFoundError
from sevensense.identity import ApiKeyRecord
from sevensense.index.annotations import annotation_store
from sevensense.index.base import VectorIndex
from sevensense.index.events import on_compaction
from sevensense.index.ingest import add_results, space_info
from sevensense.index.records import Metric, Neighbour, Scope, SearchFilter, SpaceInfo
from sevensense.index.spaces import pick_space
from sevensense.index.store import open_index
from sevensense.inference.engine import WindowResult
from sevensense.outputs.response import EmbedOutcome
from sevensense.serving.schemas import (
    SearchNeighbour,
    SearchParams,
    SearchQuery,
    SearchResponse,
)
from sevensense.serving.telemetry.metrics import metrics
from sevensense.settings import Settings

ENTRIES_EVERY_S = 30.0


def _observe_compaction(index: str, space: str, seconds: float) -> None:
    metrics().index_compaction.labels(index, space).observe(seconds)


def key_scope(key: ApiKeyRecord) -> Scope:
    """A partner sees what its key stored; an admin key sees everyone's."""
    return Scope.everyone() if "admin" in key.scopes else Scope.of(key.id)


def query_vector(text: str) -> np.ndarray:
    try:
        raw = json.loads(text)
        vector = np.asarray(raw, dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise RequestError("embedding must be a JSON array of numbers") from exc
    if vector.ndim != 1 or vector.size == 0:
        raise RequestError("embedding must be one non-empty array of numbers")
    return vector


class SimilarityService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._indexes: dict[str, VectorIndex] = {}
        self._lock = threading.Lock()
        self._counted: dict[str, float] = {}
        on_compaction(_observe_compaction)

    def index(self, name: str | None) -> VectorIndex:
        chosen = name or self.settings.index.name
        with self._lock:
            found = self._indexes.get(chosen)
            if found is None:
                found = open_index(self.settings, chosen)
                self._indexes[chosen] = found
            return found

    def add_outcome(
        self,
        outcome: EmbedOutcome,
        tenant: str,
        recording_id: str,
        site: str | None,
        time: datetime | None,
    ) -> int:
        """The outcome's windows (already transformed) into its space; degraded windows
        (zero vectors) are skipped by the indexer."""
        return self.add_results(
            outcome.artifact.manifest,
            outcome.transform,
            outcome.hop_s,
            outcome.results,
            tenant=tenant,
            recording_id=recording_id,
            site=site,
            time=time,
        )

    def add_results(
        self,
        manifest: ModelManifest,
        transform: VectorTransform,
        hop_s: float,
        results: list[WindowResult],
        *,
        tenant: str,
        recording_id: str,
        site: str | None,
        time: datetime | None,
    ) -> int:
        """Windows of an upload or a live stream; idempotent per (tenant, recording, start)."""
        index = self.index(None)
        added = add_results(
            index,
            manifest,
            transform,
            hop_s,
            results,
            tenant=tenant,
            recording_id=recording_id,
            site=site,
            time=time,
        )
        slug = space_info(manifest, transform, hop_s).key.slug
        metrics().index_adds.labels(index.backend, index.name, slug).inc(added)
        self._count_entries(index)
        return added

    def _count_entries(self, index: VectorIndex) -> None:
        """Entries per space into the gauge, at most every ENTRIES_EVERY_S (a count is a
        scan on PostgreSQL)."""
        now = time.monotonic()
        with self._lock:
            if now - self._counted.get(index.name, -ENTRIES_EVERY_S) < ENTRIES_EVERY_S:
                return
            self._counted[index.name] = now
        gauge = metrics().index_entries
        for stats in index.stats():
            gauge.labels(index.backend, index.name, stats.space.key.slug).set(stats.entries)

    def space_for_vector(self, params: SearchParams) -> SpaceInfo:
        return pick_space(self.index(params.index), params.model, params.transform)

    def window_vector(
        self, params: SearchParams, info: SpaceInfo, window_id: int, key: ApiKeyRecord
    ) -> np.ndarray:
        """An indexed window's stored vector, [1, dim]: the caller's windows only (404)."""
        store = annotation_store(self.index(params.index))
        if not store.windows(info.key, key_scope(key), [window_id]):
            raise WindowNotFoundError(
                f"no window {window_id} in this space for this key", window_id=window_id
            )
        return store.vectors(info.key, np.asarray([window_id], dtype=np.int64))

    def search(
        self,
        params: SearchParams,
        info: SpaceInfo,
        vectors: np.ndarray,
        spans: list[tuple[int | None, float | None, float | None]],
        key: ApiKeyRecord,
        request_id: str,
    ) -> SearchResponse:
        index = self.index(params.index)
        flt = SearchFilter(
            recording_prefix=params.recording_prefix,
            site=params.site,
            time_from=params.time_from,
            time_to=params.time_to,
        )
        metric: Metric = params.metric or info.metric
        started = time.perf_counter()
        found = index.search(info.key, vectors, params.k, key_scope(key), flt, metric)
        metrics().index_search.labels(index.backend, index.name).observe(
            time.perf_counter() - started
        )
        self._count_entries(index)
        return SearchResponse(
            index=index.name,
            space=info.key.slug,
            model_name=info.key.model_name,
            model_version=info.key.model_version,
            metric=metric,
            k=params.k,
            queries=[
                SearchQuery(
                    window=window, start_s=start, end_s=end, neighbours=[_wire(n) for n in hits]
                )
                for (window, start, end), hits in zip(spans, found, strict=True)
            ],
            request_id=request_id,
        )

    def delete(self, name: str | None, recording_id: str, key: ApiKeyRecord) -> tuple[str, int]:
        index = self.index(name)
        return index.name, index.delete_recording(recording_id, key_scope(key))

    def close(self) -> None:
        with self._lock:
            for index in self._indexes.values():
                index.close()
            self._indexes.clear()


def _wire(n: Neighbour) -> SearchNeighbour:
    return SearchNeighbour(
        recording_id=n.recording_id,
        start_s=n.start_s,
        end_s=n.end_s,
        score=n.score,
        distance=n.distance,
        model_name=n.model_name,
        model_version=n.model_version,
        site=n.site,
        time=n.time,
    )


def outcome_queries(
    outcome: EmbedOutcome, window: int | None
) -> tuple[SpaceInfo, np.ndarray, list[tuple[int | None, float | None, float | None]]]:
    """An audio query's windows (or the one asked for) and the space they live in."""
    results = [r for r in outcome.results if np.any(r.embedding)]
    if window is not None:
        results = [r for r in results if r.index == window]
        if not results:
            raise RequestError(
                f"window {window} is not among the query's {len(outcome.results)} windows"
            )
    if not results:
        raise RequestError("the query audio gave no embedded window to search with")
    info = space_info(outcome.artifact.manifest, outcome.transform, outcome.hop_s)
    vectors = np.stack([r.embedding for r in results]).astype(np.float32)
    return info, vectors, [(r.index, r.start_s, r.end_s) for r in results]
