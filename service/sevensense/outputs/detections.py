"""Species detections per window, written as BirdNET-Analyzer v2.4.0 writes them.

Ecologists' analysis scripts and Raven Pro read BirdNET's result files as they are: header
text, column order, separators and number formatting. Everything here follows
``birdnet_analyzer/analyze/utils.py`` of the ``birdnet-analyzer`` 2.4.0 wheel on PyPI:

- times are ``str(round(t, 2))`` of a float (``0.0``, ``3.0``, ``119.5``), confidences
  four decimals, Kaleidoscope's latitude, longitude and week four decimals;
- a Raven table has ``Low Freq (Hz)`` 0 and ``High Freq (Hz)`` ``int(min(rate / 2,
  15000))`` for the file's native rate; a recording without detections gets one ``nocall``
  row, which the combined table skips;
- the combined Raven table renumbers selections and adds up times across files
  (``str(float(t) + offset)``, offset growing by each file's duration);
- the ``Species Code`` is the eBird code when the model ships a code table, else the label,
  as BirdNET does.

Which classes a window reports is BirdNET's rule too: with ``top_k`` the best ``top_k``
whatever their score, else every class scoring at least ``min_conf``; best first; only
classes the species filter allows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sevensense.inference.engine import WindowResult
from sevensense.inference.postprocess import sigmoid
from sevensense.outputs.formats import DetectionFormat
from sevensense.storage.atomic import atomic_write

RAVEN_HEADER = (
    "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)"
    "\tCommon Name\tSpecies Code\tConfidence\tBegin Path\tFile Offset (s)\n"
)
KALEIDOSCOPE_HEADER = (
    "INDIR,FOLDER,IN FILE,OFFSET,DURATION,scientific_name,common_name,confidence,lat,lon,"
    "week,overlap,sensitivity\n"
)
CSV_HEADER = "Start (s),End (s),Scientific name,Common name,Confidence,File\n"

# Per-recording file names (BirdNET's ``get_result_file_names``) and combined ones.
SUFFIXES: dict[DetectionFormat, str] = {
    "raven": ".BirdNET.selection.table.txt",
    "audacity": ".BirdNET.results.txt",
    "csv": ".BirdNET.results.csv",
    "kaleidoscope": ".BirdNET.results.kaleidoscope.csv",
    "parquet": ".BirdNET.results.parquet",
}
COMBINED_NAMES: dict[DetectionFormat, str] = {
    "raven": "BirdNET_SelectionTable.txt",
    "csv": "BirdNET_CombinedTable.csv",
    "kaleidoscope": "BirdNET_Kaleidoscope.csv",
    "parquet": "BirdNET_Detections.parquet",
}
MEDIA_TYPES: dict[DetectionFormat, str] = {
    "raven": "text/tab-separated-values; charset=utf-8",
    "audacity": "text/plain; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "kaleidoscope": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}

SIG_FMAX = 15_000  # BirdNET's spectrogram ceiling and default band-pass maximum, Hz


def split_label(label: str) -> tuple[str, str]:
    """``Scientific_Common`` → (scientific, common); a label without ``_`` is both."""
    scientific, _, common = label.partition("_")
    return scientific, common or scientific


def time_text(t: float) -> str:
    return str(round(float(t), 2))


@dataclass(frozen=True)
class Detection:
    start_s: float
    end_s: float
    label: str
    confidence: float

    @property
    def scientific(self) -> str:
        return split_label(self.label)[0]

    @property
    def common(self) -> str:
        return split_label(self.label)[1]


@dataclass
class RecordingDetections:
    """One recording's detections, in window order and best first within a window."""

    path: str
    duration_s: float
    sample_rate: int
    detections: list[Detection] = field(default_factory=list)


@dataclass(frozen=True)
class AnalysisParams:
    """What Kaleidoscope rows repeat on every line (BirdNET's defaults when not given)."""

    lat: float = -1.0
    lon: float = -1.0
    week: float = -1.0
    overlap: float = 0.0
    sensitivity: float = 1.0


def select(
    scores: np.ndarray,
    labels: Sequence[str],
    *,
    min_conf: float,
    top_k: int | None = None,
    allowed: np.ndarray | None = None,
) -> list[tuple[str, float]]:
    """The classes one window reports, as (label, score), best first."""
    candidates = np.arange(len(scores)) if allowed is None else np.flatnonzero(allowed)
    if not top_k:
        candidates = candidates[scores[candidates] >= min_conf]
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    if top_k:
        order = order[:top_k]
    return [(labels[i], float(scores[i])) for i in order]


def window_detections(
    start_s: float, end_s: float, chosen: Iterable[tuple[str, float]]
) -> list[Detection]:
    return [Detection(start_s, end_s, label, score) for label, score in chosen]


def _high_freq(sample_rate: int) -> int:
    return int(min(sample_rate / 2, SIG_FMAX))


def raven_table(rec: RecordingDetections, codes: Mapping[str, str] | None = None) -> str:
    codes = codes or {}
    high = _high_freq(rec.sample_rate)
    lines = [RAVEN_HEADER]
    for n, d in enumerate(rec.detections, start=1):
        start, end = time_text(d.start_s), time_text(d.end_s)
        code = codes.get(d.label, d.label)
        lines.append(
            f"{n}\tSpectrogram 1\t1\t{start}\t{end}\t0\t{high}\t{d.common}\t{code}"
            f"\t{d.confidence:.4f}\t{rec.path}\t{start}\n"
        )
    if not rec.detections:
        lines.append(f"1\tSpectrogram 1\t1\t0\t3\t0\t{high}\tnocall\tnocall\t1.0\t{rec.path}\t0\n")
    return "".join(lines)


def combined_raven_table(
    recs: Sequence[RecordingDetections], codes: Mapping[str, str] | None = None
) -> str:
    """One table for many files: selections renumbered, times offset by the durations of
    the files before; ``nocall`` placeholders dropped."""
    lines = [RAVEN_HEADER]
    selection = 1
    offset = 0.0
    for rec in recs:
        for row in raven_table(rec, codes).splitlines(keepends=True)[1:]:
            cells = row.split("\t")
            if cells[7] == "nocall" and cells[8] == "nocall":
                continue
            cells[0] = str(selection)
            selection += 1
            cells[3] = str(float(cells[3]) + offset)
            cells[4] = str(float(cells[4]) + offset)
            lines.append("\t".join(cells))
        offset += rec.duration_s
    return "".join(lines)


def audacity_labels(rec: RecordingDetections) -> str:
    return "".join(
        f"{time_text(d.start_s)}\t{time_text(d.end_s)}\t{d.scientific}, {d.common}"
        f"\t{d.confidence:.4f}\n"
        for d in rec.detections
    )


def csv_rows(rec: RecordingDetections) -> str:
    return "".join(
        f"{time_text(d.start_s)},{time_text(d.end_s)},{d.scientific},{d.common},"
        f"{d.confidence:.4f},{rec.path}\n"
        for d in rec.detections
    )


def csv_table(rec: RecordingDetections) -> str:
    return CSV_HEADER + csv_rows(rec)


def kaleidoscope_rows(rec: RecordingDetections, params: AnalysisParams) -> str:
    folder_path, filename = os.path.split(rec.path)
    parent, folder = os.path.split(folder_path)
    rows = []
    for d in rec.detections:
        start, end = time_text(d.start_s), time_text(d.end_s)
        rows.append(
            f"{parent.rstrip('/')},{folder},{filename},{start},{float(end) - float(start)},"
            f"{d.scientific},{d.common},{d.confidence:.4f},{params.lat:.4f},{params.lon:.4f},"
            f"{params.week:.4f},{params.overlap},{params.sensitivity}\n"
        )
    return "".join(rows)


def kaleidoscope_table(rec: RecordingDetections, params: AnalysisParams) -> str:
    return KALEIDOSCOPE_HEADER + kaleidoscope_rows(rec, params)


def render(
    fmt: DetectionFormat,
    recs: Sequence[RecordingDetections],
    *,
    codes: Mapping[str, str] | None = None,
    params: AnalysisParams | None = None,
) -> str:
    """One text file for ``recs``: a single recording's file, or BirdNET's combined file
    for several (Audacity has no combined form: its labels carry no file)."""
    params = params or AnalysisParams()
    if fmt == "raven":
        return raven_table(recs[0], codes) if len(recs) == 1 else combined_raven_table(recs, codes)
    if fmt == "csv":
        return CSV_HEADER + "".join(csv_rows(r) for r in recs)
    if fmt == "kaleidoscope":
        return KALEIDOSCOPE_HEADER + "".join(kaleidoscope_rows(r, params) for r in recs)
    if fmt == "audacity":
        if len(recs) != 1:
            raise ValueError("Audacity labels name no file: one recording per label file")
        return audacity_labels(recs[0])
    raise ValueError(f"{fmt} is not a text format")


DETECTION_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string()),
        pa.field("start_s", pa.float64()),
        pa.field("end_s", pa.float64()),
        pa.field("scientific_name", pa.string()),
        pa.field("common_name", pa.string()),
        pa.field("label", pa.string()),
        pa.field("confidence", pa.float32()),
    ]
)


def detections_table(recs: Sequence[RecordingDetections]) -> pa.Table:
    rows = [(r.path, d) for r in recs for d in r.detections]
    return pa.table(
        {
            "source": [p for p, _ in rows],
            "start_s": [d.start_s for _, d in rows],
            "end_s": [d.end_s for _, d in rows],
            "scientific_name": [d.scientific for _, d in rows],
            "common_name": [d.common for _, d in rows],
            "label": [d.label for _, d in rows],
            "confidence": pa.array([d.confidence for _, d in rows], pa.float32()),
        },
        schema=DETECTION_SCHEMA,
    )


def result_path(out_dir: Path, source: str, fmt: DetectionFormat, root: Path | None) -> Path:
    """BirdNET's per-recording name: the path below the input folder, suffix replaced."""
    path = Path(source)
    rel = path.relative_to(root) if root is not None and path.is_relative_to(root) else path.name
    stem = str(rel).rsplit(".", 1)[0]
    return out_dir / (stem + SUFFIXES[fmt])


class DetectionCollector:
    """Turns a stream of window results (with logits) into each recording's detections;
    holds only detections, so memory grows with what was found, not with audio length."""

    def __init__(
        self,
        labels: Sequence[str],
        *,
        min_conf: float,
        top_k: int | None = None,
        allowed: np.ndarray | None = None,
    ) -> None:
        self.labels = labels
        self.min_conf = min_conf
        self.top_k = top_k
        self.allowed = allowed
        self.by_source: dict[str, list[Detection]] = {}

    def add(self, result: WindowResult) -> None:
        found = self.by_source.setdefault(result.source, [])
        if result.logits is None:
            return
        chosen = select(
            sigmoid(result.logits),
            self.labels,
            min_conf=self.min_conf,
            top_k=self.top_k,
            allowed=self.allowed,
        )
        found.extend(window_detections(result.start_s, result.end_s, chosen))

    def recording(
        self, source: str, duration_s: float, sample_rate: int, path: str | None = None
    ) -> RecordingDetections:
        """``path`` is what the files name the recording by (default: its source name)."""
        found = self.by_source.get(source, [])
        return RecordingDetections(path or source, duration_s, sample_rate, found)


SPECIES_CODES_FILE = "species_codes.json"


def load_species_codes(artifact_dir: Path) -> dict[str, str]:
    """The model's label → eBird code table when its artifact ships one (BirdNET's, from the
    ``birdnet-analyzer`` wheel, written there at set-up); empty otherwise."""
    path = artifact_dir / SPECIES_CODES_FILE
    if not path.is_file():
        return {}
    table = json.loads(path.read_text(encoding="utf-8"))
    return {str(k): str(v) for k, v in table.items()}


def write_detections(
    recordings: Sequence[RecordingDetections],
    fmt: DetectionFormat,
    out: Path,
    *,
    single_file: bool,
    combined: bool = False,
    root: Path | None = None,
    codes: Mapping[str, str] | None = None,
    params: AnalysisParams | None = None,
) -> list[Path]:
    """Per-recording files under ``out`` (and the combined one with ``combined``), or all
    recordings in the one file ``out``. Each file is written whole, then renamed into place,
    so a reader never sees half a table."""
    targets: list[tuple[Path, Sequence[RecordingDetections]]] = []
    if single_file:
        targets.append((out, recordings))
    else:
        targets.extend((result_path(out, r.path, fmt, root), [r]) for r in recordings)
        if combined and fmt != "audacity":
            targets.append((out / COMBINED_NAMES[fmt], recordings))
    for path, recs in targets:
        if fmt == "parquet":
            sink = pa.BufferOutputStream()
            pq.write_table(detections_table(recs), sink)
            data = bytes(sink.getvalue().to_pybytes())
        else:
            data = render(fmt, recs, codes=codes, params=params).encode("utf-8")
        atomic_write(path, data, mode=0o644)
    return [path for path, _ in targets]
