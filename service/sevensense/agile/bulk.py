"""A classifier over a whole index space (issue 26, item 4a): every window of the caller's
scope scored block by block, written as one wide Parquet table of scores, as
BirdNET-Analyzer's result files (the classes scoring at or over ``min_conf`` as detections,
by the writers ``detect`` uses), and as call density tables. Memory holds one block of
vectors, the windows' metadata and what was detected, never every score."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import BaseModel

from sevensense.agile.density import DensityCounter, Where
from sevensense.agile.store import Classifier
from sevensense.agile.train import Progress
from sevensense.agile.workflow import scored_blocks, sigmoid
from sevensense.errors import RequestError
from sevensense.index.annotations import IndexedWindow, annotation_store
from sevensense.index.base import VectorIndex
from sevensense.index.records import Scope, SpaceInfo
from sevensense.outputs.detections import (
    AnalysisParams,
    Detection,
    RecordingDetections,
    write_detections,
)
from sevensense.outputs.formats import DetectionFormat
from sevensense.storage.atomic import atomic_write

SCORES_NAME = "scores.parquet"
SCORE_COLUMNS = ("recording_id", "source", "window_id", "start_s", "end_s")
DENSITY_NAMES = ("density_recordings", "density_site_day")
DensityFormat = Literal["csv", "parquet"]
ApplyFormat = Literal["scores", "raven", "audacity", "csv", "kaleidoscope", "parquet"]


def default_formats() -> list[ApplyFormat]:
    return ["scores"]


DEFAULT_RATE = 48_000  # a space that does not record its sample rate: BirdNET's


class ApplySummary(BaseModel):
    classifier: str
    space: str
    windows: int
    recordings: int
    detections: dict[str, int]
    files: list[str]


def scores_schema(classes: Sequence[str]) -> pa.Schema:
    """Wide: the window, then one float32 sigmoid score column per class, named by it."""
    clash = set(classes) & set(SCORE_COLUMNS)
    if clash:
        raise RequestError(f"class names {sorted(clash)} clash with the scores table's columns")
    return pa.schema(
        [
            pa.field("recording_id", pa.string()),
            pa.field("source", pa.string()),
            pa.field("window_id", pa.int64()),
            pa.field("start_s", pa.float64()),
            pa.field("end_s", pa.float64()),
            *(pa.field(c, pa.float32()) for c in classes),
        ]
    )


def _block_table(
    schema: pa.Schema, classes: Sequence[str], windows: Sequence[IndexedWindow], s: np.ndarray
) -> pa.Table:
    columns: dict[str, object] = {
        "recording_id": [w.recording_id for w in windows],
        "source": [w.source for w in windows],
        "window_id": [w.window_id for w in windows],
        "start_s": [w.start_s for w in windows],
        "end_s": [w.end_s for w in windows],
    }
    columns.update({c: s[:, i] for i, c in enumerate(classes)})
    return pa.table(columns, schema=schema)


def apply_classifier(
    index: VectorIndex,
    space: SpaceInfo,
    scope: Scope,
    classifier: Classifier,
    out: Path,
    formats: Sequence[str] = ("scores",),
    *,
    min_conf: float = 0.5,
    density: DensityFormat | None = None,
    on_block: Progress | None = None,
) -> ApplySummary:
    """Score every window of ``scope`` in ``space`` and write ``formats`` under ``out``:
    ``scores`` (``scores.parquet``) and any detection format; with ``density``, the
    per-recording and per-site/day density tables (threshold ``min_conf``);
    ``on_block(windows scored, windows)`` after each block."""
    classifier.check_space(space.key)
    if not 0.0 <= min_conf <= 1.0:
        raise RequestError("min_conf must be in [0, 1]")
    classes = classifier.head.classes
    schema = scores_schema(classes)
    store = annotation_store(index)
    windows = store.windows(space.key, scope)
    found: dict[str, list[Detection]] = {}
    ends: dict[str, float] = {}
    where = {
        r.recording_id: Where(r.site, r.time)
        for r in index.recordings(space.key)
        if scope.tenant is None or r.tenant == scope.tenant
    }
    counter = DensityCounter(classes, min_conf, where)
    out.mkdir(parents=True, exist_ok=True)

    def score_all(sink: BinaryIO | None) -> int:
        writer = pq.ParquetWriter(sink, schema, compression="zstd") if sink else None
        done = 0
        for block, logits in scored_blocks(store, space, windows, classifier):
            s = sigmoid(logits)
            if writer is not None:
                writer.write_table(_block_table(schema, classes, block, s))
            counter.add(block, s)
            for w, row in zip(block, s, strict=True):
                ends[w.recording_id] = max(ends.get(w.recording_id, 0.0), w.end_s)
                hits = found.setdefault(w.recording_id, [])
                for i in np.argsort(-row, kind="stable"):
                    if row[i] >= min_conf:
                        hits.append(Detection(w.start_s, w.end_s, classes[i], float(row[i])))
            done += len(block)
            if on_block is not None:
                on_block(done, len(windows))
        if writer is None or sink is None:
            return 0
        writer.close()
        return sink.tell()

    files: list[Path] = []
    if "scores" in formats:
        files.append(out / SCORES_NAME)
        atomic_write(files[-1], score_all, mode=0o644)
    else:
        score_all(None)
    rate = space.sample_rate or DEFAULT_RATE
    recs = [RecordingDetections(rid, ends[rid], rate, hits) for rid, hits in found.items()]
    params = AnalysisParams(sample_rate=rate, window_s=space.window_s or 3.0)
    for fmt in formats:
        if fmt != "scores" and recs:
            detection_format: DetectionFormat = fmt  # type: ignore[assignment]
            files += write_detections(
                recs, detection_format, out, single_file=False, combined=True, params=params
            )
    if density is not None:
        for name, table in zip(
            DENSITY_NAMES, (counter.per_recording(), counter.per_site_day()), strict=True
        ):
            files.append(out / f"{name}.{density}")
            atomic_write(files[-1], _table_bytes(table, density), mode=0o644)
    totals = {c: sum(d.label == c for hits in found.values() for d in hits) for c in classes}
    return ApplySummary(
        classifier=classifier.ref,
        space=space.key.slug,
        windows=len(windows),
        recordings=len(found),
        detections=totals,
        files=[str(f) for f in dict.fromkeys(files)],
    )


def _table_bytes(table: pa.Table, fmt: DensityFormat) -> bytes:
    sink = pa.BufferOutputStream()
    if fmt == "parquet":
        pq.write_table(table, sink)
    else:
        pacsv.write_csv(table, sink)
    return bytes(sink.getvalue().to_pybytes())
