"""Labels from Raven selection tables and CSV files: what is read, and the typed error for
what cannot be."""

from __future__ import annotations

import pytest

from sevensense.agile.label_files import read_csv, read_raven
from sevensense.errors import RequestError

HEADER = "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tBegin File\tAnnotation\n"


def test_raven_rows_once_per_selection_with_their_file() -> None:
    text = HEADER + (
        "1\tSpectrogram 1\t1\t1.5\t2.25\ta.wav\tcroak\n"
        "1\tWaveform 1\t1\t1.5\t2.25\ta.wav\tcroak\n"
        "2\tSpectrogram 1\t1\t7\t9\tb.wav\tgrunt\n"
    )
    items = read_raven(text, recording=None, provenance="sel.txt")
    assert [(i.recording_id, i.start_s, i.end_s, i.label, i.type) for i in items] == [
        ("a.wav", 1.5, 2.25, "croak", "positive"),
        ("b.wav", 7.0, 9.0, "grunt", "positive"),
    ]
    assert {i.provenance for i in items} == {"sel.txt"}


def test_bad_tables_are_typed_errors() -> None:
    no_label = "Selection\tBegin Time (s)\tEnd Time (s)\n1\t0\t1\n"
    with pytest.raises(RequestError, match="no label column"):
        read_raven(no_label, recording="r", provenance="p")
    with pytest.raises(RequestError, match="names no file"):
        read_raven(
            HEADER.replace("\tBegin File", "") + "1\tS\t1\t0\t1\tx\n",
            recording=None,
            provenance="p",
        )
    with pytest.raises(RequestError, match="row 2: start 'soon' is not a number"):
        read_csv("file,start,end,label\na.wav,soon,3,x\n", provenance="p")
    with pytest.raises(RequestError, match="row 2: type 'maybe'"):
        read_csv("file,start,end,label,type\na.wav,0,3,x,maybe\n", provenance="p")
    with pytest.raises(RequestError, match="row 2: end_s must be after start_s"):
        read_csv("file,start,end,label\na.wav,3,3,x\n", provenance="p")
    with pytest.raises(RequestError, match="needs the columns"):
        read_csv("path,from,to\n", provenance="p")
