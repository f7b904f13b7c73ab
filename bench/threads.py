"""ORT threads under a noisy neighbour: ``sevensense embed`` of a 20-minute recording, quiet
and with one busy process on one core, with today's default (``allow_spinning = "auto"``:
bounded spinning only when the CPUs are idle at start) vs always spinning (ORT's own spin,
the defaults before issue 15) vs never spinning (issue 15's default), all in one run.

    .venv/bin/python -m bench.threads [--quick] [--json out.json]

The recording is the BirdNET team's 120-s soundscape tiled 10x (as FACTS.md's peer
comparison). The neighbour is ``nice -n 10 python -c 'while True: pass'`` pinned with
taskset to the last CPU the benchmark may use. Each run is the whole CLI process (start-up,
model load, decode, inference, Parquet), the way a user sees it; runs are interleaved
(quiet/busy x ours/before, round after round) and summarised by the median so that drift on
a shared machine hits every configuration alike. ``--quick``: a 4-minute recording, 1 round.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import soundfile as sf

from bench.report import quick_json_main
from sevensense.settings import InferenceSettings, process_cpus, repo_root

REPO = repo_root()
SOUNDSCAPE = REPO.parent / "shared" / "audio" / "soundscape_birdnet_120s_48k.flac"
CLI = Path(sys.executable).parent / "sevensense"


def tiled_recording(path: Path, times: int) -> float:
    """The soundscape ``times`` times in a row, written one copy at a time; seconds."""
    audio, rate = sf.read(SOUNDSCAPE, dtype="float32")
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, format="FLAC") as f:
        for _ in range(times):
            f.write(audio)
    return float(times * len(audio) / rate)


CONFIGS: dict[str, dict[str, str]] = {
    "ours": {},
    "spin": {
        "SEVENSENSE_INFERENCE__ALLOW_SPINNING": "true",
        "SEVENSENSE_INFERENCE__SPIN_DURATION_US": "0",
    },
    "no_spin": {"SEVENSENSE_INFERENCE__ALLOW_SPINNING": "false"},
}


@contextmanager
def busy_neighbour(cpu: int) -> Iterator[None]:
    """One niced busy loop pinned to ``cpu``."""
    proc = subprocess.Popen(
        ["taskset", "-c", str(cpu), "nice", "-n", "10", sys.executable, "-c", "while True: pass"]
    )
    try:
        time.sleep(0.3)
        yield
    finally:
        proc.kill()
        proc.wait()


def embed_seconds(recording: Path, out: Path, extra_env: dict[str, str]) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEVENSENSE_INFERENCE__")}
    env.update(extra_env)
    start = time.perf_counter()
    subprocess.run(
        [str(CLI), "embed", str(recording), "--out", str(out), "--quiet"],
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def run(quick: bool) -> dict[str, Any]:
    rounds, copies = (1, 2) if quick else (3, 10)
    cpus = sorted(os.sched_getaffinity(0))
    ours = InferenceSettings()
    configs = CONFIGS
    times: dict[str, list[float]] = {f"{c}_{n}": [] for c in configs for n in ("quiet", "busy")}
    with tempfile.TemporaryDirectory(prefix="bench-threads-") as tmp:
        recording = Path(tmp) / "soundscape_tiled.flac"
        audio_s = tiled_recording(recording, copies)
        out = Path(tmp) / "out.parquet"
        embed_seconds(recording, out, {})  # warm the page cache and the model files
        for _ in range(rounds):
            for name, env in configs.items():
                times[f"{name}_quiet"].append(embed_seconds(recording, out, env))
                if len(cpus) > 1:
                    with busy_neighbour(cpus[-1]):
                        times[f"{name}_busy"].append(embed_seconds(recording, out, env))
    med = {k: round(statistics.median(v), 2) for k, v in times.items() if v}
    result: dict[str, Any] = {
        "recording": f"{SOUNDSCAPE.name} x{copies} ({audio_s / 60:.0f} min)",
        "rounds": rounds,
        "cpus_usable": process_cpus(),
        "intra_threads": ours.resolved_intra_threads(),
        "ours": {"allow_spinning": ours.allow_spinning, "spin_duration_us": ours.spin_duration_us},
        "configs": configs,
        "seconds_median": med,
        "seconds_all": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "x_real_time_ours_quiet": round(audio_s / med["ours_quiet"], 1),
    }
    if "ours_busy" in med:
        result["ratios"] = {
            "ours_quiet_vs_spin_quiet (goal <= 1.05)": round(
                med["ours_quiet"] / med["spin_quiet"], 3
            ),
            "ours_busy_vs_ours_quiet (goal <= 1.3)": round(med["ours_busy"] / med["ours_quiet"], 3),
            "spin_busy_vs_spin_quiet": round(med["spin_busy"] / med["spin_quiet"], 3),
            "no_spin_busy_vs_no_spin_quiet": round(med["no_spin_busy"] / med["no_spin_quiet"], 3),
            "ours_quiet_vs_no_spin_quiet": round(med["ours_quiet"] / med["no_spin_quiet"], 3),
        }
    return result


def main() -> None:
    quick_json_main(run, __doc__, "4-minute recording, 1 round")


if __name__ == "__main__":
    main()
