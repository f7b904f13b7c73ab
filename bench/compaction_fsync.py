"""An add's fsync while a compaction writes its new file (issue 24): another process appends
a log-sized record and fsyncs it every ``--every-ms`` (what an add does to its vector log),
while this one writes ``--mb`` of random bytes beside it, the way a compaction wrote
``usearch.index`` before (one write at page-cache speed, then one fsync) and the way it does
now (:func:`sevensense.index.vector_log.write_synced`: synced every ``SYNC_CHUNK_BYTES``).
Prints the appender's fsync latencies during each write and how long each write took."""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from load_tests.stats import latency_stats
from sevensense.index.vector_log import SYNC_CHUNK_BYTES, write_synced


def _appender(path: str, every_s: float, stop: Any, out: Any) -> None:
    record = os.urandom(8 + 2 * 1024 + 4) * 32  # one add: 32 windows of 1024-d
    times: list[tuple[float, float]] = []
    with open(path, "ab", buffering=0) as f:
        while not stop.is_set():
            t = time.perf_counter()
            f.write(record)
            os.fsync(f.fileno())
            times.append((t, time.perf_counter() - t))
            time.sleep(every_s)
    out.put(times)


def _write_once(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--mb", type=int, default=300, help="size of the compaction's file")
    parser.add_argument("--every-ms", type=float, default=50.0)
    parser.add_argument("--dir", default=None, help="where (default: the temp directory)")
    args = parser.parse_args()
    data = np.random.default_rng(0).bytes(args.mb << 20)
    with tempfile.TemporaryDirectory(prefix="7s-fsync-", dir=args.dir) as tmp:
        root = Path(tmp)
        stop, out = mp.Event(), mp.Queue()
        appender = mp.Process(
            target=_appender, args=(str(root / "vectors.0.log"), args.every_ms / 1000, stop, out)
        )
        appender.start()
        time.sleep(1.0)
        spans: dict[str, tuple[float, float]] = {}
        for name in ("one write, one fsync (before)", "write_synced (now)"):
            os.sync()
            time.sleep(1.0)
            t = time.perf_counter()
            if name.startswith("one"):
                _write_once(root / "a.tmp", data)
            else:
                write_synced(root / "b.tmp", data)
            spans[name] = (t, time.perf_counter())
            time.sleep(1.0)
        stop.set()
        times = out.get()
        appender.join()
    report: dict[str, Any] = {"mb": args.mb, "chunk_mb": SYNC_CHUNK_BYTES >> 20}
    for name, (start, end) in spans.items():
        during = [d * 1000 for t, d in times if start <= t + d and t <= end]
        report[name] = {
            "write_s": round(end - start, 2),
            "add_fsync": {k: round(v, 1) for k, v in latency_stats(during).items()}
            | {"n": len(during)},
        }
    report["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
