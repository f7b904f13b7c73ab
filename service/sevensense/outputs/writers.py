"""Result writers. Parquet streams row groups so output memory stays bounded; ``.npz`` must
hold everything until close (NumPy's format has no append), which is fine for embeddings.

Parquet schema, one row per embedded window:

| column | type | meaning |
|---|---|---|
| source | string | the recording (path or key) |
| window_index | int32 | slot index in the recording, counting skipped windows too |
| start_s, end_s | float64 | time span of real audio in the window |
| padded_samples | int32 | samples of padding (0 for full windows) |
| model_name, model_version, model_variant, provider | string | what produced the row |
| reducer, projection | string | only in transformed outputs: `name:version`, `poincare-c1-m0.999` |
| embedding | fixed_size_list<float32>[D] | L2-normalised embedding |
| top_labels, top_scores | list<string>, list<float32> | top-k classes, sigmoid scores |
| norm, sparsity | float32 | quality figures |
| is_valid | bool | ADR-007 Appendix B checks passed |
| quality_flags | list<string> | nan / inf / zero_norm / norm_out_of_range |
| logits | fixed_size_list<float32>[C] | only with --include-logits |

The file's key-value metadata ``sevensense`` holds a JSON run summary: per-recording status,
skipped windows with their times and reasons, and errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sevensense.inference.engine import WindowResult

ROW_GROUP = 512


class ResultWriter(Protocol):
    def write(self, result: WindowResult) -> None: ...
    def close(self, summary: dict[str, Any]) -> None: ...


def results_schema(
    dim: int, n_classes: int | None, constants: tuple[str, ...] = (), custom: bool = False
) -> pa.Schema:
    """``constants`` names string columns that hold one value for the whole file (the
    reducer and projection of a transformed output), placed after the model's identity."""
    fields = [
        pa.field("source", pa.string()),
        pa.field("window_index", pa.int32()),
        pa.field("start_s", pa.float64()),
        pa.field("end_s", pa.float64()),
        pa.field("padded_samples", pa.int32()),
        pa.field("model_name", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("model_variant", pa.string()),
        *(pa.field(name, pa.string()) for name in constants),
        pa.field("provider", pa.string()),
        pa.field("embedding", pa.list_(pa.float32(), dim)),
        pa.field("top_labels", pa.list_(pa.string())),
        pa.field("top_scores", pa.list_(pa.float32())),
        pa.field("norm", pa.float32()),
        pa.field("sparsity", pa.float32()),
        pa.field("is_valid", pa.bool_()),
        pa.field("quality_flags", pa.list_(pa.string())),
    ]
    if n_classes:
        fields.append(pa.field("logits", pa.list_(pa.float32(), n_classes)))
    if custom:  # a custom classifier's classes and sigmoid scores (null: not scored)
        fields.append(pa.field("custom_labels", pa.list_(pa.string())))
        fields.append(pa.field("custom_scores", pa.list_(pa.float32())))
    return pa.schema(fields)


def results_table(
    rows: list[WindowResult], schema: pa.Schema, constants: dict[str, str] | None = None
) -> pa.Table:
    """One Arrow table per row group; the HTTP service's Arrow responses use it too."""
    dim = schema.field("embedding").type.list_size
    has_logits = "logits" in schema.names
    emb = np.stack([r.embedding for r in rows]).astype(np.float32, copy=False)
    columns: dict[str, Any] = {
        "source": [r.source for r in rows],
        "window_index": [r.index for r in rows],
        "start_s": [r.start_s for r in rows],
        "end_s": [r.end_s for r in rows],
        "padded_samples": [r.padded_samples for r in rows],
        "model_name": [r.meta.model.name for r in rows],
        "model_version": [r.meta.model.version for r in rows],
        "model_variant": [r.meta.model.variant for r in rows],
        **{name: [value] * len(rows) for name, value in (constants or {}).items()},
        "provider": [r.meta.provider for r in rows],
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), dim),
        "top_labels": [[name for name, _ in r.top_k] for r in rows],
        "top_scores": [[score for _, score in r.top_k] for r in rows],
        "norm": [r.quality.norm for r in rows],
        "sparsity": [r.quality.sparsity for r in rows],
        "is_valid": [r.quality.is_valid for r in rows],
        "quality_flags": [r.quality.flags() for r in rows],
    }
    if has_logits:
        n_classes = schema.field("logits").type.list_size
        logits = np.stack(
            [r.logits if r.logits is not None else np.full(n_classes, np.nan) for r in rows]
        ).astype(np.float32)
        columns["logits"] = pa.FixedSizeListArray.from_arrays(pa.array(logits.ravel()), n_classes)
    if "custom_scores" in schema.names:
        columns["custom_labels"] = [[c for c, _ in r.custom] if r.custom else None for r in rows]
        columns["custom_scores"] = [[s for _, s in r.custom] if r.custom else None for r in rows]
    return pa.table(columns, schema=schema)


class ParquetWriter:
    def __init__(
        self,
        path: Path,
        embedding_dim: int,
        n_classes: int | None = None,
        constants: dict[str, str] | None = None,
        custom: bool = False,
    ) -> None:
        self.path = path
        self.constants = constants or {}
        self.schema = results_schema(embedding_dim, n_classes, tuple(self.constants), custom)
        self.dim = embedding_dim
        self.n_classes = n_classes
        self._rows: list[WindowResult] = []
        self._writer = pq.ParquetWriter(str(path), self.schema, compression="zstd")
        self.rows_written = 0

    def write(self, result: WindowResult) -> None:
        self._rows.append(result)
        if len(self._rows) >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        rows = self._rows
        self._writer.write_table(results_table(rows, self.schema, self.constants))
        self.rows_written += len(rows)
        self._rows = []

    def close(self, summary: dict[str, Any]) -> None:
        self._flush()
        self._writer.add_key_value_metadata({"sevensense": json.dumps(summary, default=str)})
        self._writer.close()


class NpzWriter:
    def __init__(self, path: Path, embedding_dim: int, n_classes: int | None = None) -> None:
        self.path = path
        self.dim = embedding_dim
        self.n_classes = n_classes
        self._results: list[WindowResult] = []

    def write(self, result: WindowResult) -> None:
        self._results.append(result)

    def close(self, summary: dict[str, Any]) -> None:
        rs = self._results
        sources = sorted({r.source for r in rs})
        index = {s: i for i, s in enumerate(sources)}
        arrays: dict[str, Any] = {
            "embeddings": (
                np.stack([r.embedding for r in rs]) if rs else np.zeros((0, self.dim), np.float32)
            ),
            "source_index": np.array([index[r.source] for r in rs], dtype=np.int32),
            "sources": np.array(sources, dtype=np.str_),
            "window_index": np.array([r.index for r in rs], dtype=np.int32),
            "start_s": np.array([r.start_s for r in rs], dtype=np.float64),
            "end_s": np.array([r.end_s for r in rs], dtype=np.float64),
            "is_valid": np.array([r.quality.is_valid for r in rs], dtype=bool),
            "top_labels": np.array([[n for n, _ in r.top_k] for r in rs], dtype=np.str_),
            "top_scores": np.array([[s for _, s in r.top_k] for r in rs], dtype=np.float32),
            "summary": np.array(json.dumps(summary, default=str)),
        }
        if self.n_classes and rs and all(r.logits is not None for r in rs):
            arrays["logits"] = np.stack([r.logits for r in rs if r.logits is not None])
        with self.path.open("wb") as f:
            np.savez_compressed(f, **arrays)


def open_writer(
    path: Path,
    fmt: str,
    embedding_dim: int,
    n_classes: int | None = None,
    constants: dict[str, str] | None = None,
    custom: bool = False,
) -> ParquetWriter | NpzWriter:
    """``constants`` (Parquet only; ``.npz`` keeps them in its summary) as in
    :func:`results_schema`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        return ParquetWriter(path, embedding_dim, n_classes, constants, custom)
    if fmt == "npz":
        return NpzWriter(path, embedding_dim, n_classes)
    raise ValueError(f"unknown output format {fmt!r}; parquet or npz")
