"""BirdNET-Analyzer 2.4.0 vs ``sevensense detect``, whole process, and resampy vs soxr.

Both tools analyse the same recording with the same options and write all four result
formats; the time is the whole command (start-up, model load, decode, resampling,
inference, files), interleaved in one run because the machine is shared. The recordings
are the BirdNET team's 120-s soundscape and the same tiled 10x (20 minutes). BirdNET-
Analyzer runs with ``--threads 2`` (both cores; a single file is one process whose
TFLite interpreter gets the threads) and ``--batch_size 8``.

The resampling figures stream 20 minutes of noise at 32 and 44.1 kHz to 48 kHz through
BirdNET-Analyzer's resampling (``kaiser_fast``, resampy) and soxr HQ, one core.

    .venv/bin/python -m bench.birdnet_analyzer [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.threads import CLI, SOUNDSCAPE, tiled_recording
from sevensense.audio.resample import StreamResampler
from tests.peers.birdnet_analyzer_env import VENV, ensure_venv

REPO = Path(__file__).resolve().parents[1]
RTYPES = ("table", "audacity", "csv", "kaleidoscope")


def _timed(cmd: list[str], cwd: Path) -> float:
    tick = time.perf_counter()
    subprocess.run(
        cmd,
        cwd=cwd,
        check=True,
        capture_output=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""},
    )
    return time.perf_counter() - tick


def whole_process(analyzer: Path, recording: Path, work: Path) -> dict[str, float]:
    work.mkdir(parents=True, exist_ok=True)
    ours = _timed(
        [
            str(CLI),
            "--models-dir",
            str(REPO / "models"),
            "detect",
            str(recording),
            "--out",
            str(work / "ours"),
            *(x for f in ("raven", "audacity", "csv", "kaleidoscope") for x in ("--format", f)),
            "--quiet",
        ],
        work,
    )
    theirs = _timed(
        [
            str(analyzer),
            "-m",
            "birdnet_analyzer.analyze",
            str(recording),
            "-o",
            str(work / "theirs"),
            "--threads",
            "2",
            "--batch_size",
            "8",
            "--rtype",
            *RTYPES,
        ],
        work,
    )
    same = sorted(
        p.name
        for p in (work / "theirs").iterdir()
        if (work / "ours" / p.name).read_bytes() == p.read_bytes()
    )
    return {
        "sevensense_s": round(ours, 2),
        "birdnet_analyzer_s": round(theirs, 2),
        "speedup": round(theirs / ours, 2),
        "identical_files": len(same),
        "files": len(list((work / "theirs").iterdir())),
    }


def resampling(seconds: float) -> dict[str, float]:
    out: dict[str, float] = {}
    rng = np.random.default_rng(0)
    for rate in (32_000, 44_100):
        audio = (0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32)
        for quality in ("kaiser_fast", "high"):
            stream = StreamResampler(rate, 48_000, quality)
            tick = time.perf_counter()
            for i in range(0, audio.shape[0], 65_536):
                stream.process(audio[i : i + 65_536])
            stream.flush()
            out[f"{quality}_{rate}_x_realtime"] = round(seconds / (time.perf_counter() - tick), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="the 120-s soundscape only")
    args = parser.parse_args()
    analyzer = ensure_venv(VENV, REPO / ".cache")
    report: dict[str, object] = {"load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        report["soundscape_120s"] = whole_process(analyzer, SOUNDSCAPE, work / "a")
        if not args.quick:
            long = work / "soundscape_20min.flac"
            report["tiled_20min"] = {
                "audio_s": tiled_recording(long, 10),
                **whole_process(analyzer, long, work / "b"),
            }
    report["resampling_20min"] = resampling(60.0 if args.quick else 1200.0)
    report["load_after"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
