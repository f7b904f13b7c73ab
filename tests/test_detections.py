"""BirdNET-Analyzer's result formats: exact bytes for known detections, files that parse by
the rules Raven and BirdNET's tools use, and `sevensense detect` on real recordings."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from sevensense.inference.recordings import expand_paths
from sevensense.outputs.detections import (
    CSV_HEADER,
    KALEIDOSCOPE_HEADER,
    RAVEN_HEADER,
    AnalysisParams,
    Detection,
    RecordingDetections,
    analysis_params_csv,
    audacity_labels,
    combined_raven_table,
    csv_table,
    flat_sigmoid,
    kaleidoscope_table,
    merge_consecutive,
    raven_table,
    select,
)
from tests.conftest import AUDIO

ROBIN = "Turdus migratorius_American Robin"
WREN = "Thryothorus ludovicianus_Carolina Wren"
LABELLED = AUDIO / "labelled"

RAVEN_COLUMNS = [
    "Selection",
    "View",
    "Channel",
    "Begin Time (s)",
    "End Time (s)",
    "Low Freq (Hz)",
    "High Freq (Hz)",
    "Common Name",
    "Species Code",
    "Confidence",
    "Begin Path",
    "File Offset (s)",
]


def recording(path: str = "/data/site7/rec1.wav", rate: int = 48_000) -> RecordingDetections:
    return RecordingDetections(
        path,
        10.0,
        rate,
        [
            Detection(0.0, 3.0, ROBIN, 0.91234),
            Detection(0.0, 3.0, WREN, 0.25),
            Detection(9.0, 10.0, WREN, 0.5),
        ],
    )


# --- exact bytes (BirdNET-Analyzer 2.4.0's f-strings) ---------------------------------------


def test_raven_table_bytes() -> None:
    text = raven_table(recording(), {ROBIN: "amerob"})
    assert text == (
        RAVEN_HEADER + "1\tSpectrogram 1\t1\t0.0\t3.0\t0\t15000\tAmerican Robin\tamerob\t0.9123"
        "\t/data/site7/rec1.wav\t0.0\n"
        "2\tSpectrogram 1\t1\t0.0\t3.0\t0\t15000\tCarolina Wren\t" + WREN + "\t0.2500"
        "\t/data/site7/rec1.wav\t0.0\n"
        "3\tSpectrogram 1\t1\t9.0\t10.0\t0\t15000\tCarolina Wren\t" + WREN + "\t0.5000"
        "\t/data/site7/rec1.wav\t9.0\n"
    )


def test_raven_high_freq_follows_the_native_rate_and_nocall_marks_an_empty_file() -> None:
    empty = RecordingDetections("a.wav", 5.0, 16_000, [])
    assert raven_table(empty) == (
        RAVEN_HEADER + "1\tSpectrogram 1\t1\t0\t3\t0\t8000\tnocall\tnocall\t1.0\ta.wav\t0\n"
    )


def test_combined_raven_adds_up_times_renumbers_and_drops_nocall() -> None:
    first = RecordingDetections("a.wav", 10.0, 48_000, [Detection(3.0, 6.0, ROBIN, 0.5)])
    empty = RecordingDetections("b.wav", 4.5, 48_000, [])
    third = RecordingDetections("c.wav", 9.0, 48_000, [Detection(0.0, 3.0, WREN, 0.75)])
    lines = combined_raven_table([first, empty, third]).splitlines()
    assert lines[0] + "\n" == RAVEN_HEADER
    assert lines[1].split("\t")[:5] == ["1", "Spectrogram 1", "1", "3.0", "6.0"]
    assert lines[2].split("\t")[:5] == ["2", "Spectrogram 1", "1", "14.5", "17.5"]
    assert lines[2].split("\t")[10:] == ["c.wav", "0.0"]  # the offset within its own file
    assert len(lines) == 3


def test_audacity_csv_and_kaleidoscope_bytes() -> None:
    rec = recording()
    assert audacity_labels(rec).splitlines()[0] == (
        "0.0\t3.0\tTurdus migratorius, American Robin\t0.9123"
    )
    assert csv_table(rec) == (
        CSV_HEADER
        + "0.0,3.0,Turdus migratorius,American Robin,0.9123,/data/site7/rec1.wav\n"
        + "0.0,3.0,Thryothorus ludovicianus,Carolina Wren,0.2500,/data/site7/rec1.wav\n"
        + "9.0,10.0,Thryothorus ludovicianus,Carolina Wren,0.5000,/data/site7/rec1.wav\n"
    )
    params = AnalysisParams(lat=42.44, lon=-76.5, week=20, overlap=0.0, sensitivity=1.0)
    assert kaleidoscope_table(rec, params).splitlines()[:2] == [
        KALEIDOSCOPE_HEADER.strip(),
        "/data,site7,rec1.wav,0.0,3.0,Turdus migratorius,American Robin,0.9123,42.4400,"
        "-76.5000,20,0.0,1.0",
    ]
    default = kaleidoscope_table(rec, AnalysisParams()).splitlines()[1]
    assert default.endswith(",-1.0000,-1.0000,-1,0.0,1.0")


def test_select_is_birdnets_rule() -> None:
    labels = ["a_A", "b_B", "c_C", "d_D"]
    scores = np.array([0.3, 0.05, 0.9, 0.1], dtype=np.float32)
    assert [label for label, _ in select(scores, labels, min_conf=0.1)] == ["c_C", "a_A", "d_D"]
    # top_k ignores the threshold, as BirdNET's --top_n does
    assert [label for label, _ in select(scores, labels, min_conf=0.5, top_k=2)] == ["c_C", "a_A"]
    allowed = np.array([True, True, False, True])
    assert [label for label, _ in select(scores, labels, min_conf=0.1, allowed=allowed)] == [
        "a_A",
        "d_D",
    ]


# --- `sevensense detect` on real recordings ------------------------------------------------


def run_detect(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sevensense.cli", "detect", *args, "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def parse_raven(path: Path) -> list[dict[str, str]]:
    """As Raven Pro reads a selection table: tab-separated, named columns, typed cells."""
    text = path.read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text), delimiter="\t"))
    assert text.splitlines()[0].split("\t") == RAVEN_COLUMNS
    for n, row in enumerate(rows, start=1):
        assert int(row["Selection"]) == n
        assert row["View"] == "Spectrogram 1" and row["Channel"] == "1"
        begin, end = float(row["Begin Time (s)"]), float(row["End Time (s)"])
        assert 0 <= begin < end
        assert int(row["Low Freq (Hz)"]) == 0 < int(row["High Freq (Hz)"]) <= 15_000
        assert 0 <= float(row["Confidence"]) <= 1
        assert float(row["File Offset (s)"]) >= 0
    return rows


def test_detect_writes_a_raven_table_per_recording_and_a_combined_one(tmp_path: Path) -> None:
    proc = run_detect(str(LABELLED), "--out", str(tmp_path), "--format", "raven", "--combined")
    assert proc.returncode == 0, proc.stderr
    per_file = sorted(tmp_path.rglob("*.BirdNET.selection.table.txt"))
    sources = expand_paths([LABELLED])
    assert len(per_file) == len(sources)
    robin_file = tmp_path / "common_yellowthroat.BirdNET.selection.table.txt"
    rows = parse_raven(robin_file)
    assert rows and rows[0]["Common Name"] == "Common Yellowthroat"
    assert all(float(r["Confidence"]) >= 0.25 for r in rows)
    combined = parse_raven(tmp_path / "BirdNET_SelectionTable.txt")
    assert len(combined) == sum(
        len([r for r in parse_raven(p) if r["Common Name"] != "nocall"]) for p in per_file
    )
    begins = [float(r["Begin Time (s)"]) for r in combined]
    assert begins == sorted(begins)  # times add up across files


@pytest.mark.parametrize(
    ("fmt", "delimiter", "header"),
    [
        ("csv", ",", CSV_HEADER),
        ("kaleidoscope", ",", KALEIDOSCOPE_HEADER),
        ("audacity", "\t", None),
    ],
)
def test_detect_text_formats_parse(
    tmp_path: Path, fmt: str, delimiter: str, header: str | None
) -> None:
    source = LABELLED / "common_yellowthroat.mp3"
    out = tmp_path / f"out.{fmt}.txt"
    proc = run_detect(str(source), "--out", str(out), "--format", fmt, "--top-k", "3")
    assert proc.returncode == 0, proc.stderr
    text = out.read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    if header is not None:
        assert rows[0] == header.strip().split(",")
        rows = rows[1:]
    windows = 2  # the recording is 5.9 s: two 3-s windows
    assert len(rows) == 3 * windows
    for row in rows:
        start, end = (
            float(row[0 if fmt != "kaleidoscope" else 3]),
            float(row[1 if fmt != "kaleidoscope" else 4]),
        )
        assert start >= 0 and end > 0
    confidences = [float(r[-1] if fmt == "audacity" else r[4 if fmt == "csv" else 7]) for r in rows]
    assert max(confidences) > 0.9


def test_detect_parquet_and_bad_input(tmp_path: Path) -> None:
    out = tmp_path / "d.parquet"
    proc = run_detect(
        str(LABELLED / "common_yellowthroat.mp3"), "--out", str(out), "--format", "parquet"
    )
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(out)
    assert table.column_names[:3] == ["source", "start_s", "end_s"]
    assert "Common Yellowthroat" in table.column("common_name").to_pylist()
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"not audio at all" * 100)
    proc = run_detect(str(garbage), "--out", str(tmp_path / "g"), "--format", "csv")
    assert proc.returncode == 2 and "garbage.wav" in proc.stderr
    proc = run_detect(str(LABELLED), "--out", str(tmp_path / "x.txt"), "--format", "audacity")
    assert proc.returncode == 2 and "Audacity" in proc.stderr


def test_raven_species_codes_are_ebirds(tmp_path: Path) -> None:
    out = tmp_path / "t.txt"
    proc = run_detect(str(LABELLED / "common_yellowthroat.mp3"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert {r["Species Code"] for r in parse_raven(out)} == {"comyel"}


def test_location_filter_keeps_only_expected_species(tmp_path: Path) -> None:
    soundscape = AUDIO / "soundscape_birdnet_120s_48k.flac"
    everywhere, ithaca = tmp_path / "all.csv", tmp_path / "ithaca.csv"
    assert run_detect(str(soundscape), "--out", str(everywhere), "--format", "csv").returncode == 0
    proc = run_detect(
        str(soundscape),
        "--out",
        str(ithaca),
        "--format",
        "csv",
        "--lat",
        "42.48",
        "--lon",
        "-76.45",
        "--week",
        "20",
    )
    assert proc.returncode == 0, proc.stderr
    assert "species filter: location" in proc.stdout and "132 species" in proc.stdout
    names = lambda p: {r["Scientific name"] for r in csv.DictReader(p.open())}  # noqa: E731
    assert "Clamator coromandus" in names(everywhere)  # an Asian cuckoo, not in Ithaca in May
    assert "Clamator coromandus" not in names(ithaca)
    assert names(ithaca) and names(ithaca) < names(everywhere)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lat", "91", "--lon", "0"], "latitude"),
        (["--lat", "10", "--lon", "0", "--week", "49"], "week"),
        (["--lat", "10", "--lon", "0", "--week", "0"], "week"),
        (["--lat", "10"], "--lat and --lon go together"),
    ],
)
def test_bad_location_filters_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    proc = run_detect(
        str(LABELLED / "common_yellowthroat.mp3"), "--out", str(tmp_path / "o.csv"), *args
    )
    assert proc.returncode == 2
    assert message in proc.stderr


def test_species_lists_are_checked(tmp_path: Path) -> None:
    source = str(LABELLED / "common_yellowthroat.mp3")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    proc = run_detect(source, "--out", str(tmp_path / "o.csv"), "--species-list", str(empty))
    assert proc.returncode == 2 and "invalid_species_filter" in proc.stderr
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("Geothlypis trichas_Common Yellowthroat\nFoo barus_Nothing\n")
    proc = run_detect(source, "--out", str(tmp_path / "o.csv"), "--species-list", str(unknown))
    assert proc.returncode == 2 and "Foo barus" in proc.stderr
    good = tmp_path / "good.txt"
    good.write_text("Setophaga petechia_Yellow Warbler\n")
    out = tmp_path / "o.csv"
    proc = run_detect(
        source, "--out", str(out), "--format", "csv", "--species-list", str(good), "--top-k", "1"
    )
    assert proc.returncode == 0, proc.stderr
    assert {r["Scientific name"] for r in csv.DictReader(out.open())} == {"Setophaga petechia"}


def test_species_command_prints_a_birdnet_species_list() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sevensense.cli",
            "species",
            "--lat",
            "52.52",
            "--lon",
            "13.405",
            "--week",
            "18",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 160 and all("_" in line for line in lines)
    assert "160 species" in proc.stderr


# --- BirdNET-Analyzer's scoring, merging and side files -------------------------------------


def test_flat_sigmoid_is_birdnets_float32_formula() -> None:
    logits = np.array([-30.0, -2.5, -1.0986123, 0.0, 0.3, 4.0, 25.0], dtype=np.float32)
    for s in (0.5, 0.75, 1.0, 1.25, 1.5):
        bias = (s - 1.0) * 10.0
        expected = 1 / (1.0 + np.exp(-1 * np.clip(logits + bias, -20, 20)))
        got = flat_sigmoid(logits, s)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)
    assert flat_sigmoid(logits, 1.25)[1] > flat_sigmoid(logits, 1.0)[1]  # more sensitive
    clipped = flat_sigmoid(np.array([-30.0, -20.0, 20.0, 25.0], np.float32))
    assert clipped[0] == clipped[1] > 0.0 and clipped[2] == clipped[3]  # clipped at +-20


def test_merge_consecutive_follows_birdnet_analyzer() -> None:
    robin, wren = "Turdus migratorius_American Robin", "Thryothorus ludovicianus_Carolina Wren"
    dets = [
        Detection(0.0, 3.0, robin, 0.9),
        Detection(0.0, 3.0, wren, 0.3),
        Detection(3.0, 6.0, robin, 0.5),
        Detection(6.0, 9.0, robin, 0.7),
        Detection(9.0, 12.0, robin, 0.2),
        Detection(12.0, 13.5, wren, 0.6),
    ]
    assert merge_consecutive(dets, 1) == dets
    merged = merge_consecutive(dets, 3)
    top3 = np.float32((np.float32(0.9) + np.float32(0.7) + np.float32(0.5)) / 3)
    assert [(d.start_s, d.end_s, d.label) for d in merged] == [
        (0.0, 9.0, robin),  # three at most: 9-12 starts a run of its own
        (0.0, 3.0, wren),
        (9.0, 12.0, robin),
        (12.0, 13.5, wren),
    ]
    assert merged[0].confidence == float(top3)
    assert merged[2].confidence == float(np.float32(0.2))
    everything = merge_consecutive(dets, 100)
    assert [(d.start_s, d.end_s) for d in everything if d.label == robin] == [(0.0, 12.0)]


def test_analysis_params_file_is_birdnet_analyzers() -> None:
    text = analysis_params_csv(AnalysisParams(overlap=1.5, merge_consecutive=3))
    assert text == (
        "File splitting duration,Segment length,Sample rate,Segment overlap,Minimum Segment "
        "length,Bandpass filter minimum,Bandpass filter maximum,Merge consecutive detections,"
        "Audio speed,Custom classifier path\r\n600,3.0,48000,1.5,1.0,0,15000,3,1.0,\r\n"
    )
