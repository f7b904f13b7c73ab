"""Detection for detection against the BirdNET team's `birdnet` package on the same recording
and the same model (their LiteRT run of the original TFLite, ours of the converted ONNX).

`birdnet` runs from its own virtualenv, as checkov does: its dependencies are not the
project's. It is made once (pinned) and reused; `birdnet.load_custom` keeps it offline.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import peers
from sevensense.builders.birdnet import cached_birdnet_files
from tests.conftest import CACHE, audio

RUNNER = Path(__file__).parent / "peers" / "birdnet_detect.py"


@pytest.fixture(scope="session")
def birdnet_python() -> Path:
    return peers.birdnet_python()


def theirs(python: Path, recording: Path, threshold: float, out: Path) -> list[dict[str, object]]:
    files = cached_birdnet_files(CACHE)
    proc = subprocess.run(
        [
            str(python),
            str(RUNNER),
            str(files.tflite_path),
            str(files.labels_path),
            str(recording),
            str(threshold),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0
    return json.loads(out.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def ours(recording: Path, threshold: float, out: Path) -> list[dict[str, object]]:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "sevensense.cli",
            "detect",
            str(recording),
            "--out",
            str(out),
            "--format",
            "csv",
            "--min-conf",
            str(threshold),
            "--quiet",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    return [
        {
            "start": float(r["Start (s)"]),
            "end": float(r["End (s)"]),
            "label": f"{r['Scientific name']}_{r['Common name']}",
            "confidence": float(r["Confidence"]),
        }
        for r in rows
    ]


@pytest.mark.parametrize(
    "name", ["soundscape_birdnet_120s_48k.flac", "labelled/common_yellowthroat.mp3"]
)
def test_same_detections_as_the_birdnet_package(
    birdnet_python: Path, tmp_path: Path, name: str
) -> None:
    recording = audio(name)
    threshold = 0.25
    peer = theirs(birdnet_python, recording, threshold, tmp_path / "theirs.json")
    mine = ours(recording, threshold, tmp_path / "ours.csv")
    assert peer, "the peer found nothing: the comparison would prove nothing"

    def key(row: dict[str, object]) -> tuple[float, float, str]:
        # BirdNET-Analyzer's files round times to 2 decimals; the package does not.
        start, end = float(row["start"]), float(row["end"])  # type: ignore[arg-type]
        return (round(start, 2), round(end, 2), str(row["label"]))

    # Scores within a hair of the threshold may fall either side; everything else must match.
    near = 2e-3
    peer_keys = {key(r) for r in peer if float(r["confidence"]) > threshold + near}  # type: ignore[arg-type]
    mine_keys = {key(r) for r in mine if float(r["confidence"]) > threshold + near}  # type: ignore[arg-type]
    assert peer_keys == mine_keys
    theirs_by_key = {key(r): float(r["confidence"]) for r in peer}  # type: ignore[arg-type]
    for row in mine:
        if key(row) in theirs_by_key:
            assert abs(float(row["confidence"]) - theirs_by_key[key(row)]) < 1e-3  # type: ignore[arg-type]
