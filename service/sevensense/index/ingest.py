"""Getting windows into an index: from the engine as they are embedded (CLI, API, worker) or
from Parquet files written by ``sevensense embed`` (``index add``, ``index reindex``).

Windows are added in batches as they stream past, so indexing a recording of any length
holds one batch, never the recording. Zero vectors (the gateway's flagged "no embedding"
fallback) are never indexed: they would be everyone's nearest neighbour.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sevensense.artifacts.manifest import ModelManifest
from sevensense.artifacts.registry import ModelRegistry
from sevensense.embeddings.transform import (
    IDENTITY,
    VectorTransform,
    artifact_sha256,
    load_transform,
)
from sevensense.errors import RequestError
from sevensense.index.base import VectorIndex
from sevensense.index.records import EntryBatch, EntryMeta, SpaceInfo, SpaceKey
from sevensense.inference.engine import WindowResult
from sevensense.settings import Settings

BATCH = 256


def space_info(
    manifest: ModelManifest, transform: VectorTransform = IDENTITY, hop_s: float | None = None
) -> SpaceInfo:
    """The space a model version's vectors go to under ``transform``."""
    projection = transform.projection
    return SpaceInfo(
        key=SpaceKey(
            model_name=manifest.name,
            model_version=manifest.version,
            transform=transform.space_key,
        ),
        dim=transform.out_dim(manifest.embedding_dim),
        metric="poincare" if projection is not None else "cosine",
        curvature=abs(projection.curvature) if projection is not None else 1.0,
        model_variant=manifest.variant,
        sample_rate=manifest.sample_rate,
        window_s=manifest.window_samples / manifest.sample_rate,
        hop_s=hop_s,
        transform=transform.describe(),
    )


@dataclass
class Indexer:
    """Buffers windows and adds them ``BATCH`` at a time. ``recording_ids`` maps a window's
    ``source`` to the recording id it is stored under (default: the source itself)."""

    index: VectorIndex
    info: SpaceInfo
    tenant: str
    site: str | None = None
    time: datetime | None = None
    recording_ids: dict[str, str] = field(default_factory=dict)
    transform: VectorTransform = IDENTITY
    added: int = 0
    seen: int = 0
    _vectors: list[np.ndarray] = field(default_factory=list)
    _meta: list[EntryMeta] = field(default_factory=list)

    def __call__(self, result: WindowResult) -> None:
        self.add(result)

    def add(self, result: WindowResult) -> None:
        vector = np.asarray(result.embedding, dtype=np.float32)
        if not np.any(vector):
            return
        self.seen += 1
        self._vectors.append(vector)
        self._meta.append(
            EntryMeta(
                recording_id=self.recording_ids.get(result.source, result.source),
                source=result.source,
                start_s=result.start_s,
                end_s=result.end_s,
                tenant=self.tenant,
                site=self.site,
                time=self.time,
            )
        )
        if len(self._meta) >= BATCH:
            self.flush()

    def flush(self) -> int:
        if not self._meta:
            return 0
        vectors = self.transform.apply(np.stack(self._vectors))
        added = self.index.add(self.info, EntryBatch(vectors, self._meta))
        self.added += added
        self._vectors, self._meta = [], []
        return added


def add_results(
    index: VectorIndex,
    manifest: ModelManifest,
    transform: VectorTransform,
    hop_s: float | None,
    results: Sequence[WindowResult],
    *,
    tenant: str,
    recording_id: str,
    site: str | None = None,
    time: datetime | None = None,
) -> int:
    """Windows already transformed (a served or deferred answer) into their space, under
    one recording id; zero vectors (degraded windows) are skipped. Idempotent."""
    sources = {r.source: recording_id for r in results}
    indexer = Indexer(index, space_info(manifest, transform, hop_s), tenant, site, time, sources)
    for result in results:
        indexer.add(result)
    indexer.flush()
    return indexer.added


@dataclass(frozen=True)
class ParquetSpace:
    """What a Parquet file of ``sevensense embed`` says about its vectors' space."""

    model_name: str
    model_version: str
    model_variant: str
    reducer: str | None
    projection: str | None


def parquet_space(path: Path) -> ParquetSpace:
    """Read from the first row: every row of one file comes from one model and transform."""
    try:
        file = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise RequestError(f"{path}: not a readable Parquet file ({exc})") from exc
    names = set(file.schema_arrow.names)
    needed = {"source", "start_s", "end_s", "model_name", "model_version", "embedding"}
    if not needed <= names:
        raise RequestError(f"{path}: not an embedding file (missing {sorted(needed - names)})")
    columns = ["model_name", "model_version"] + [
        c for c in ("model_variant", "reducer", "projection") if c in names
    ]
    first = next(file.iter_batches(batch_size=1, columns=columns), None)
    if first is None or first.num_rows == 0:
        raise RequestError(f"{path}: holds no windows")
    row: dict[str, Any] = first.to_pylist()[0]

    def opt(key: str) -> str | None:
        value = row.get(key)
        return None if value in (None, "", "none") else str(value)

    return ParquetSpace(
        model_name=row["model_name"],
        model_version=row["model_version"],
        model_variant=row.get("model_variant") or "base",
        reducer=opt("reducer"),
        projection=opt("projection"),
    )


def parquet_transform_and_info(
    settings: Settings, registry: ModelRegistry, space: ParquetSpace, dim: int
) -> tuple[VectorTransform, SpaceInfo]:
    """The file's space. Its vectors are already transformed; the transform is resolved
    only to name the space (a reducer fitted for another version is refused here too)."""
    artifact = registry.resolve(f"{space.model_name}:{space.model_version}:{space.model_variant}")
    manifest = artifact.manifest
    transform = IDENTITY
    if space.reducer or space.projection:
        projection = space.projection
        curvature, max_norm = 1.0, 0.999
        if projection:
            curvature, max_norm = _poincare_params(projection)
        sha = artifact_sha256(artifact)
        transform = load_transform(
            settings,
            manifest.name,
            manifest.version,
            sha,
            reduce=space.reducer,
            project="poincare" if projection else None,
            curvature=curvature,
            max_norm=max_norm,
        )
    info = space_info(manifest, transform)
    if info.dim != dim:
        raise RequestError(f"the file's vectors have width {dim}; its space expects {info.dim}")
    return transform, info


def _poincare_params(key: str) -> tuple[float, float]:
    """``poincare-c<curvature>-m<max norm>`` back into its numbers."""
    try:
        _, c, m = key.split("-", 2)
        return float(c[1:]), float(m[1:])
    except ValueError as exc:
        raise RequestError(f"unknown projection {key!r} in the file") from exc


def parquet_batches(
    path: Path,
    tenant: str,
    *,
    recording_id: str | None = None,
    site: str | None = None,
    time: datetime | None = None,
    rows: int = 1024,
) -> Iterator[EntryBatch]:
    """The file's windows, ``rows`` at a time (never the whole file in memory)."""
    file = pq.ParquetFile(path)
    for batch in file.iter_batches(
        batch_size=rows, columns=["source", "start_s", "end_s", "embedding"]
    ):
        emb = batch.column("embedding")
        width = emb.type.list_size if pa.types.is_fixed_size_list(emb.type) else None
        flat = emb.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        vectors = flat.reshape(len(batch), width or (len(flat) // max(len(batch), 1)))
        keep = np.any(vectors != 0, axis=1)
        sources = batch.column("source").to_pylist()
        starts = batch.column("start_s").to_pylist()
        ends = batch.column("end_s").to_pylist()
        meta = [
            EntryMeta(
                recording_id=recording_id or sources[i],
                source=sources[i],
                start_s=starts[i],
                end_s=ends[i],
                tenant=tenant,
                site=site,
                time=time,
            )
            for i in range(len(batch))
            if keep[i]
        ]
        yield EntryBatch(vectors[keep], meta)


def parquet_dim(path: Path) -> int:
    field_type = pq.ParquetFile(path).schema_arrow.field("embedding").type
    if pa.types.is_fixed_size_list(field_type):
        return int(field_type.list_size)
    first = next(pq.ParquetFile(path).iter_batches(batch_size=1, columns=["embedding"]))
    return len(first.column("embedding")[0])


def add_parquet(
    settings: Settings,
    registry: ModelRegistry,
    index: VectorIndex,
    path: Path,
    tenant: str,
    *,
    recording_id: str | None = None,
    site: str | None = None,
    time: datetime | None = None,
) -> tuple[SpaceInfo, int, int]:
    """(space, windows read, windows new) for one Parquet file."""
    space = parquet_space(path)
    _, info = parquet_transform_and_info(settings, registry, space, parquet_dim(path))
    seen = added = 0
    for batch in parquet_batches(path, tenant, recording_id=recording_id, site=site, time=time):
        seen += len(batch)
        added += index.add(info, batch)
    return info, seen, added


def summary_line(info: SpaceInfo) -> str:
    return json.dumps({"space": info.key.slug, "dim": info.dim, "metric": info.metric})
