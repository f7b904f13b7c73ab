"""Labels from files people already have: a Raven selection table (tab-separated; ``Begin
Time (s)``, ``End Time (s)``, a label column such as ``Annotation`` or ``Species``, and
``Begin File``/``Begin Path`` or a recording named by the caller) or a CSV of
``file,start,end,label`` (optional ``type``, ``provenance``). Each row becomes one
:class:`AnnotationIn` by recording and span; the index resolves spans to windows."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from pydantic import ValidationError

from sevensense.errors import RequestError
from sevensense.index.annotations import AnnotationIn

RAVEN_LABEL_COLUMNS = ("Annotation", "Label", "Species", "Class", "Call Type", "Sound Type")
RAVEN_FILE_COLUMNS = ("Begin File", "Begin Path", "File")
CSV_FILE_COLUMNS = ("file", "filename", "recording", "recording_id")
CSV_LABEL_TYPES = ("positive", "negative", "uncertain")


def _pick(header: list[str], names: tuple[str, ...]) -> str | None:
    lowered = {h.strip().lower(): h for h in header}
    for name in names:
        if name.lower() in lowered:
            return lowered[name.lower()]
    return None


def _item(row: int, **fields: object) -> AnnotationIn:
    try:
        return AnnotationIn.model_validate(fields)
    except ValidationError as exc:
        message = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
        raise RequestError(f"row {row}: {message}", row=row) from exc


def _float(value: str | None, row: int, column: str) -> float:
    try:
        return float(value or "")
    except ValueError as exc:
        raise RequestError(f"row {row}: {column} {value!r} is not a number", row=row) from exc


def read_raven(
    text: str, *, recording: str | None, provenance: str, label_column: str | None = None
) -> list[AnnotationIn]:
    reader = csv.DictReader(io.StringIO(text), delimiter="\t")
    header = list(reader.fieldnames or [])
    if "Begin Time (s)" not in header or "End Time (s)" not in header:
        raise RequestError("not a Raven selection table: no 'Begin Time (s)'/'End Time (s)'")
    label_col = label_column or _pick(header, RAVEN_LABEL_COLUMNS)
    if label_col is None or label_col not in header:
        raise RequestError(
            f"the selection table has no label column (one of {', '.join(RAVEN_LABEL_COLUMNS)})"
        )
    file_col = _pick(header, RAVEN_FILE_COLUMNS)
    if file_col is None and recording is None:
        raise RequestError("the table names no file: give the recording id it belongs to")
    out = []
    for n, row in enumerate(reader, start=2):
        if row.get("View", "").startswith("Waveform"):
            continue  # Raven lists each selection once per view
        out.append(
            _item(
                n,
                recording_id=recording or row[file_col or ""],
                start_s=_float(row["Begin Time (s)"], n, "Begin Time (s)"),
                end_s=_float(row["End Time (s)"], n, "End Time (s)"),
                label=(row[label_col] or "").strip(),
                type="positive",
                provenance=provenance,
            )
        )
    return out


def read_csv(text: str, *, provenance: str) -> list[AnnotationIn]:
    reader = csv.DictReader(io.StringIO(text))
    header = list(reader.fieldnames or [])
    file_col = _pick(header, CSV_FILE_COLUMNS)
    missing = [c for c in ("start", "end", "label") if _pick(header, (c,)) is None]
    if file_col is None or missing:
        raise RequestError(
            "a label CSV needs the columns file (or recording), start, end, label; "
            f"it has {', '.join(header) or 'none'}"
        )
    cols = {c: _pick(header, (c,)) for c in ("start", "end", "label", "type", "provenance")}
    out = []
    for n, row in enumerate(reader, start=2):
        kind = (row.get(cols["type"] or "") or "positive").strip().lower()
        if kind not in CSV_LABEL_TYPES:
            raise RequestError(f"row {n}: type {kind!r} is not one of {CSV_LABEL_TYPES}", row=n)
        out.append(
            _item(
                n,
                recording_id=row[file_col],
                start_s=_float(row[cols["start"] or ""], n, "start"),
                end_s=_float(row[cols["end"] or ""], n, "end"),
                label=(row[cols["label"] or ""] or "").strip(),
                type=kind,
                provenance=(row.get(cols["provenance"] or "") or provenance).strip(),
            )
        )
    return out


def read_label_file(
    path: Path, *, recording: str | None, provenance: str, label_column: str | None = None
) -> list[AnnotationIn]:
    """A Raven table (tab-separated, ``.txt``/``.tsv``) or a CSV, told apart by the header."""
    text = path.read_text(encoding="utf-8-sig")
    first = text.splitlines()[0] if text else ""
    if "\t" in first and "Begin Time (s)" in first:
        return read_raven(
            text, recording=recording, provenance=provenance, label_column=label_column
        )
    return read_csv(text, provenance=provenance)
