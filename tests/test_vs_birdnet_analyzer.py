"""BirdNET-Analyzer 2.4.0 itself and ``sevensense detect``, same recordings and options:
every result file must be byte-identical.

BirdNET-Analyzer runs for real, offline, from its own virtualenv
(``tests/peers/birdnet_analyzer_env.py``); one run of each tool per option set writes every
format (Raven, Audacity, CSV, Kaleidoscope), the combined tables and the side files. The
recordings are the 120-s soundscape (48 kHz) and the labelled clips (32 kHz, 44.1 kHz,
clips under 1 s and under 4 s), so the resampling, the segment rule and ``nocall`` rows are
all exercised. Overlapping windows are not compared: BirdNET-Analyzer then re-reads each
file from ``chunks x step`` after its 600-s piece and analyses the last <= overlap seconds
once more as a fresh piece, which ``detect`` does not emulate (see the docs page).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import AUDIO, CACHE, MODELS
from tests.peers.birdnet_analyzer_env import VENV, ensure_venv

RTYPES = {"table": "raven", "audacity": "audacity", "csv": "csv", "kaleidoscope": "kaleidoscope"}

# (BirdNET-Analyzer's flags, ours)
CASES: dict[str, tuple[list[str], list[str]]] = {
    "defaults, combined": (["--combine_results"], ["--combined"]),
    "min_conf 0.1, Ithaca week 20, sensitivity 1.25, merge 3": (
        [
            "--min_conf",
            "0.1",
            "--lat",
            "42.48",
            "--lon",
            "-76.45",
            "--week",
            "20",
            "--sensitivity",
            "1.25",
            "--merge_consecutive",
            "3",
        ],
        [
            "--min-conf",
            "0.1",
            "--lat",
            "42.48",
            "--lon",
            "-76.45",
            "--week",
            "20",
            "--sensitivity",
            "1.25",
            "--merge-consecutive",
            "3",
        ],
    ),
}


@pytest.fixture(scope="module")
def analyzer_python() -> Path:
    return ensure_venv(VENV, CACHE)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The soundscape and the labelled clips, linked file by file (BirdNET-Analyzer's
    ``os.walk`` does not enter linked folders)."""
    root = tmp_path_factory.mktemp("in")
    labelled = sorted(p for p in (AUDIO / "labelled").rglob("*") if p.is_file())
    sources = [AUDIO / "soundscape_birdnet_120s_48k.flac", *labelled]
    for src in sources:
        rel = src.relative_to(AUDIO)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(src)
    return root


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith("error")
    }


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_result_files_are_byte_identical(
    analyzer_python: Path, recordings: Path, tmp_path: Path, case: str
) -> None:
    theirs_flags, ours_flags = CASES[case]
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    # Both tools see the same path string, so file columns can match byte for byte.
    source = os.path.relpath(recordings, tmp_path)
    subprocess.run(
        [
            str(analyzer_python),
            "-m",
            "birdnet_analyzer.analyze",
            source,
            "-o",
            "theirs",
            "--threads",
            "2",
            "--rtype",
            *RTYPES,
            *theirs_flags,
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=900,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""},
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "sevensense.cli",
            "--models-dir",
            str(MODELS),
            "detect",
            source,
            "--out",
            "ours",
            *(x for fmt in RTYPES.values() for x in ("--format", fmt)),
            "--quiet",
            *ours_flags,
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=600,
    )
    expected, got = _files(theirs), _files(ours)
    assert len(expected) >= 4 * 26 + 1, sorted(expected)
    assert sorted(got) == sorted(expected)
    differ = [name for name in expected if got[name] != expected[name]]
    assert not differ, f"{len(differ)} of {len(expected)} files differ: {differ[:10]}"
    # Something was found, so the identity is not that of empty tables.
    assert sum(b.count(b"\n") for n, b in got.items() if n.endswith(".csv")) > 40
