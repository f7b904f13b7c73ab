"""``sevensense verify``'s Parquet file: one row per primary window, the run's report as
the file's ``sevensense`` metadata. Streamed in row groups, written under a temporary name
and renamed, so a failed run never leaves a half file under the requested name."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sevensense.verification.offline import VerifyReport, WindowRow

ROW_GROUP = 1024

_DISCREPANCY = pa.struct(
    [
        ("species", pa.string()),
        ("flagged_by", pa.string()),
        ("primary_score", pa.float32()),
        ("verifier_score", pa.float32()),
    ]
)

SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("window_index", pa.int32()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("primary_model", pa.string()),
        ("verifier_model", pa.string()),
        ("agreement", pa.float32()),
        ("reason", pa.string()),
        ("verifier_windows", pa.int16()),
        ("verifier_best", pa.float32()),
        ("primary_top5", pa.list_(pa.string())),
        ("primary_top5_scores", pa.list_(pa.float32())),
        ("verifier_top5", pa.list_(pa.string())),
        ("verifier_top5_scores", pa.list_(pa.float32())),
        ("discrepancies", pa.list_(_DISCREPANCY)),
    ]
)


def _flat(row: WindowRow) -> dict[str, Any]:
    v = row.verification
    return {
        "source": row.source,
        "window_index": row.window_index,
        "start_s": row.start_s,
        "end_s": row.end_s,
        "primary_model": row.primary_model,
        "verifier_model": row.verifier_model,
        "agreement": v.agreement,
        "reason": v.reason,
        "verifier_windows": v.verifier_windows,
        "verifier_best": v.verifier_best,
        "primary_top5": [s.species for s in v.primary_top5],
        "primary_top5_scores": [s.score for s in v.primary_top5],
        "verifier_top5": [s.species for s in v.verifier_top5],
        "verifier_top5_scores": [s.score for s in v.verifier_top5],
        "discrepancies": [d.model_dump() for d in v.discrepancies],
    }


class VerifyWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self._writer = pq.ParquetWriter(str(self._tmp), SCHEMA, compression="zstd")
        self._rows: list[dict[str, Any]] = []
        self.rows_written = 0

    def write(self, row: WindowRow) -> None:
        self._rows.append(_flat(row))
        if len(self._rows) >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            self._writer.write_table(pa.Table.from_pylist(self._rows, schema=SCHEMA))
            self.rows_written += len(self._rows)
            self._rows = []

    def close(self, report: VerifyReport) -> None:
        self._flush()
        self._writer.add_key_value_metadata({"sevensense": report.model_dump_json()})
        self._writer.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._writer.close()
        self._tmp.unlink(missing_ok=True)


def read_report(path: Path) -> dict[str, Any]:
    meta = pq.read_metadata(path).metadata or {}
    loaded: dict[str, Any] = json.loads(meta[b"sevensense"])
    return loaded
