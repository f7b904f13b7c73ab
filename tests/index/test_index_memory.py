"""Indexing while embedding holds one batch of windows, never the recording: in one process,
the peak RSS after indexing 5 minutes stays that after 1 minute (the 2-hour figure is
in ``make bench-index``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.synthetic_audio import write_long_recording
from tests.conftest import MODELS, REPO

GROWTH_BOUND_MB = 24


def test_peak_rss_does_not_grow_with_recording(tmp_path: Path, perch_artifact) -> None:  # type: ignore[no-untyped-def]
    short = write_long_recording(tmp_path / "one_minute.wav", 60)
    long = write_long_recording(tmp_path / "five_minutes.wav", 300)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.index_rss",
            str(short),
            str(long),
            "--models-dir",
            str(MODELS),
            "--index-dir",
            str(tmp_path / "index"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    loaded, first, second = (json.loads(line) for line in out.stdout.strip().splitlines()[-3:])
    assert first["added"] == first["windows"] == 23
    assert second["added"] == second["windows"] == 119
    growth = second["peak_rss_mb"] - first["peak_rss_mb"]
    assert growth < GROWTH_BOUND_MB, (loaded, first, second)
