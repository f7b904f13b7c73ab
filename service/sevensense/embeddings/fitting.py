"""Where a reducer's training vectors come from: Parquet files of ``sevensense embed``, or
recordings embedded here. Either way only valid windows of the one model count."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from sevensense.artifacts.manifest import ModelManifest
from sevensense.errors import ReducerMismatchError, RequestError
from sevensense.inference.engine import EmbeddingEngine, EmbedOptions, WindowResult
from sevensense.inference.recordings import embed_recordings
from sevensense.inference.sessions import LoadedModel

log = logging.getLogger(__name__)


def vectors_from_parquet(path: Path, manifest: ModelManifest) -> np.ndarray:
    """The valid, untransformed embeddings of ``manifest``'s model in one Parquet file."""
    try:
        table = pq.read_table(
            path, columns=["model_name", "model_version", "embedding", "is_valid"]
        )
        names = pq.read_schema(path).names
    except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
        raise RequestError(f"{path} is not a Parquet file of `sevensense embed`: {exc}") from exc
    if "reducer" in names or "projection" in names:
        raise RequestError(f"{path} holds transformed vectors; fit on the model's own output")
    found = set(
        zip(
            table.column("model_name").to_pylist(),
            table.column("model_version").to_pylist(),
            strict=True,
        )
    )
    expected = (manifest.name, manifest.version)
    if found - {expected}:
        other = ", ".join(sorted(f"{n}:{v}" for n, v in found - {expected}))
        raise ReducerMismatchError(
            f"{path} holds embeddings of {other}, not {manifest.name}:{manifest.version}"
        )
    width = table.schema.field("embedding").type.list_size
    if width != manifest.embedding_dim:
        raise ReducerMismatchError(
            f"{path}: embeddings are {width}-d, {manifest.identity} gives {manifest.embedding_dim}"
        )
    valid = np.asarray(table.column("is_valid").to_numpy(zero_copy_only=False), dtype=bool)
    flat = table.column("embedding").combine_chunks().flatten().to_numpy()
    vectors = np.asarray(flat, dtype=np.float32).reshape(-1, width)
    return np.asarray(vectors[valid])


def vectors_from_audio(
    engine: EmbeddingEngine,
    files: list[Path],
    model: LoadedModel,
    options: EmbedOptions,
) -> np.ndarray:
    """Embed recordings with ``model`` and keep the valid windows' embeddings."""
    kept: list[np.ndarray] = []

    def keep(result: WindowResult) -> None:
        if result.quality.is_valid:
            kept.append(result.embedding)

    summary = embed_recordings(engine, files, keep, model=model, options=options)
    for report in summary.failed:
        log.warning("reduce fit: %s %s: %s", report.status, report.source, report.error)
    if not kept:
        return np.zeros((0, model.manifest.embedding_dim), dtype=np.float32)
    return np.stack(kept).astype(np.float32, copy=False)


def split_inputs(paths: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """(Parquet files, audio files or directories)."""
    parquet: list[Path] = []
    audio: list[Path] = []
    for path in paths:
        (parquet if path.suffix.lower() == ".parquet" else audio).append(path)
    return parquet, audio
