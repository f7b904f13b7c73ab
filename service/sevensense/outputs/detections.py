"""Species detections per window, written as BirdNET-Analyzer v2.4.0 writes them.

Ecologists' analysis scripts and Raven Pro read BirdNET's result files as they are: header
text, column order, separators and number formatting. Everything here follows
``birdnet_analyzer/analyze/utils.py`` of the ``birdnet-analyzer`` 2.4.0 wheel on PyPI:

- times are ``str(round(t, 2))`` of a float (``0.0``, ``3.0``, ``119.5``), confidences
  four decimals, Kaleidoscope's latitude and longitude four decimals, its week as given
  (``20``, ``-1``), its overlap and sensitivity as Python prints them (``0.0``, ``1.0``);
- scores are BirdNET's "flat sigmoid" in float32 with its sensitivity shift
  (``model.flat_sigmoid``), and with ``merge_consecutive`` > 1 a species' overlapping or
  touching detections merge into one, scored by the mean of its best three
  (``merge_consecutive_detections``, float32 arithmetic and row order included);
- an output folder also gets ``BirdNET_analysis_params.csv`` (``save_analysis_params``)
  and, with the combined Raven table, ``BirdNET_SelectionTable.list.txt`` (the files it
  covers);
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

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sevensense.audio.kaiser_fast import FILE_SPLITTING_S
from sevensense.inference.engine import WindowResult
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

# birdnet_analyzer/config.py values the files state or the segment rule uses.
SIG_FMAX = 15_000  # BirdNET's spectrogram ceiling and default band-pass maximum, Hz
SIG_FMIN = 0
SIG_MINLEN = 1.0  # a last segment shorter than this (s) is not analysed
AUDIO_SPEED = 1.0
ANALYSIS_PARAMS_NAME = "BirdNET_analysis_params.csv"
ANALYSIS_PARAMS_HEADER = (
    "File splitting duration",
    "Segment length",
    "Sample rate",
    "Segment overlap",
    "Minimum Segment length",
    "Bandpass filter minimum",
    "Bandpass filter maximum",
    "Merge consecutive detections",
    "Audio speed",
    "Custom classifier path",
)


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
    """A run's parameters as BirdNET-Analyzer's files state them (its defaults when not
    given): Kaleidoscope rows repeat some, ``BirdNET_analysis_params.csv`` lists others."""

    lat: float = -1
    lon: float = -1
    week: int = -1
    overlap: float = 0.0
    sensitivity: float = 1.0
    merge_consecutive: int = 1
    sample_rate: int = 48_000
    window_s: float = 3.0


def analysis_params_csv(params: AnalysisParams) -> str:
    """``BirdNET_analysis_params.csv`` as ``csv.writer`` writes it (CRLF rows)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(ANALYSIS_PARAMS_HEADER)
    writer.writerow(
        (
            FILE_SPLITTING_S,
            params.window_s,
            params.sample_rate,
            params.overlap,
            SIG_MINLEN,
            SIG_FMIN,
            SIG_FMAX,
            params.merge_consecutive,
            AUDIO_SPEED,
            None,
        )
    )
    return out.getvalue()


def flat_sigmoid(logits: np.ndarray, sensitivity: float = 1.0) -> np.ndarray:
    """BirdNET's score, in float32 as ``model.flat_sigmoid(x, -1, sensitivity)`` computes it:
    the sensitivity shifts the logits by ``(s - 1) * 10`` before a clipped sigmoid."""
    x = np.asarray(logits, dtype=np.float32)
    bias = (sensitivity - 1.0) * 10.0
    return np.asarray(1 / (1.0 + np.exp(-1 * np.clip(x + bias, -20, 20))), dtype=np.float32)


def merge_consecutive(detections: Sequence[Detection], max_consecutive: int) -> list[Detection]:
    """BirdNET-Analyzer's ``merge_consecutive_detections``: per species, a detection whose
    end reaches the next one's start absorbs it (at most ``max_consecutive`` in a run),
    scored by the float32 mean of the run's best three; rows come back in its order
    (by start time, then species in order of first detection)."""
    if max_consecutive <= 1:
        return list(detections)
    species: dict[str, list[tuple[str, np.float32]]] = {}
    for d in detections:
        stamp = f"{time_text(d.start_s)}-{time_text(d.end_s)}"
        species.setdefault(d.label, []).append((stamp, np.float32(d.confidence)))
    merged: dict[str, list[tuple[str, np.float32]]] = {}
    for label, found in species.items():
        stamps = sorted(found, key=lambda t: float(t[0].split("-", 1)[0]))
        i = 0
        while i < len(stamps) - 1:
            start, end = stamps[i][0].split("-", 1)
            next_start, next_end = stamps[i + 1][0].split("-", 1)
            if float(end) >= float(next_start):
                scores = [stamps[i][1], stamps[i + 1][1]]
                stamps.pop(i)
                while i < len(stamps) - 1 and float(next_end) >= float(
                    stamps[i + 1][0].split("-", 1)[0]
                ):
                    if len(scores) >= max_consecutive:
                        break
                    scores.append(stamps[i + 1][1])
                    next_end = stamps[i + 1][0].split("-", 1)[1]
                    stamps.pop(i + 1)
                top = sorted(scores, reverse=True)[:3]
                stamps[i] = (f"{start}-{next_end}", np.float32(sum(top) / len(top)))
            i += 1
        merged[label] = stamps
    by_stamp: dict[str, list[tuple[str, np.float32]]] = {}
    for label, stamps in merged.items():
        for stamp, score in stamps:
            by_stamp.setdefault(stamp, []).append((label, score))
    out: list[Detection] = []
    for stamp in sorted(by_stamp, key=lambda t: float(t.split("-", 1)[0])):
        start, end = stamp.split("-", 1)
        out.extend(Detection(float(start), float(end), lb, float(sc)) for lb, sc in by_stamp[stamp])
    return out


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


def custom_detections(
    detections: Sequence[Detection], results: Iterable[WindowResult], min_conf: float
) -> list[Detection]:
    """The model's detections with a custom classifier's classes at or over ``min_conf``
    (its sigmoid score is the confidence), in window order, after the model's in a window."""
    extra = [
        Detection(r.start_s, r.end_s, label, score)
        for r in results
        for label, score in sorted(r.custom or [], key=lambda c: -c[1])
        if score >= min_conf
    ]
    return sorted([*detections, *extra], key=lambda d: d.start_s)


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
            f"{params.week},{params.overlap},{params.sensitivity}\n"
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
        sensitivity: float = 1.0,
        merge_consecutive: int = 1,
    ) -> None:
        self.labels = labels
        self.min_conf = min_conf
        self.top_k = top_k
        self.allowed = allowed
        self.sensitivity = sensitivity
        self.merge_consecutive = merge_consecutive
        self.by_source: dict[str, list[Detection]] = {}

    def add(self, result: WindowResult) -> None:
        found = self.by_source.setdefault(result.source, [])
        if result.logits is None:
            return
        chosen = select(
            flat_sigmoid(result.logits, self.sensitivity),
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
        found = merge_consecutive(self.by_source.get(source, []), self.merge_consecutive)
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
    side: list[tuple[Path, str]] = []
    if single_file:
        targets.append((out, recordings))
    else:
        targets.extend((result_path(out, r.path, fmt, root), [r]) for r in recordings)
        if combined and fmt != "audacity":
            targets.append((out / COMBINED_NAMES[fmt], recordings))
        if combined and fmt == "raven":
            listed = COMBINED_NAMES["raven"].rsplit(".", 1)[0] + ".list.txt"
            side.append((out / listed, "".join(f"{r.path}\n" for r in recordings)))
        side.append((out / ANALYSIS_PARAMS_NAME, analysis_params_csv(params or AnalysisParams())))
    for path, text in side:
        atomic_write(path, text.encode("utf-8"), mode=0o644)
    for path, recs in targets:
        if fmt == "parquet":
            sink = pa.BufferOutputStream()
            pq.write_table(detections_table(recs), sink)
            data = bytes(sink.getvalue().to_pybytes())
        else:
            data = render(fmt, recs, codes=codes, params=params).encode("utf-8")
        atomic_write(path, data, mode=0o644)
    return [path for path, _ in targets] + [path for path, _ in side]
