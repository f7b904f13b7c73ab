"""One CLI worker of ``load_tests.fuzz``: what ``sevensense embed`` does for each file,
in one process that keeps its model loaded, with the CPU time and memory each file cost.

Reads one path per stdin line, answers one JSON line per path on stdout:
``{"name", "outcome", "cpu_s", "wall_s", "rss_mb", "peak_rise_mb"}``. The outcome is "ok" or
the typed error's code, as the CLI's summary reports it. Only APIs the previous commits
have too, so the same worker measures old and new code (``PYTHONPATH``).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    from sevensense.cli.common import plan_request
    from sevensense.inference.engine import EmbeddingEngine
    from sevensense.inference.recordings import embed_recordings
    from sevensense.planning.options import RequestOptions
    from sevensense.settings import load_settings

    engine = EmbeddingEngine(load_settings())
    model = engine.model(None)
    plan = plan_request(engine, model, RequestOptions())
    print(json.dumps({"ready": True, "rss_mb": rss_mb()}), flush=True)
    for line in sys.stdin:
        path = Path(line.strip())
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        cpu, wall = time.process_time(), time.perf_counter()
        summary = embed_recordings(
            engine, [path], lambda r: None, model=model, options=plan.options
        )
        report = summary.recordings[0]
        outcome = "ok" if report.status == "ok" else str((report.error or {}).get("code"))
        rise = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
        answer = {
            "name": path.name,
            "outcome": outcome,
            "cpu_s": time.process_time() - cpu,
            "wall_s": time.perf_counter() - wall,
            "rss_mb": rss_mb(),
            "peak_rise_mb": rise / 1024,
        }
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
