"""The fleet under faults: uploads and 16 real-time streams through HAProxy while one entry
task is SIGKILLed and later the other SIGTERMed (each restarted), as a scale-in, a deploy
or a crashed task would.

    make load-fleet   # or: .venv/bin/python -m load_tests.fleet [--seconds 90] [--streams 16]

The fleet is load_tests/cluster.py's (two entries, one CPU model service by URL, HAProxy).
Every stream is the reference client sending the 120-s soundscape from a random offset at
real time in 100-ms frames. Uploads are a 21-s clip, two at a time, retried per the
documented client rule (503/502 or a refused connection: wait ``Retry-After``, at most 3
tries), and eight more sent straight to the second task just before its SIGTERM.
Reported: requests failed after retries, windows lost and duplicated per stream (expected:
every hop of the audio sent, once), resumes and the task each landed on, what a rebuilt
resume cost, the SIGTERM drain time, and latency p50/p99 before, during and after the
faults.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from load_tests.cluster import Fleet
from load_tests.server import OUT, REPO
from load_tests.stats import latency_stats
from load_tests.streams import HOP_S, Looped
from sevensense.client.stream import StreamRun, stream_audio

CLIP = REPO.parent / "shared" / "audio" / "perch_clap_21s_16k.wav"
RETRIES = 3


class Counted(Looped):
    """The soundscape source, noting what each connection sent: audio sent twice after a
    resume is what the previous connection sent past the new one's offset."""

    def __init__(self, start_s: float, seconds: float) -> None:
        super().__init__(start_s, seconds)
        self.spans: list[list[int]] = []  # [offset, end sent] per connection

    def frames_from(self, offset: int, frame_samples: int) -> Iterator[bytes]:
        span = [offset, offset]
        self.spans.append(span)
        for frame in super().frames_from(offset, frame_samples):
            span[1] += len(frame) // 2
            yield frame

    def resent_samples(self) -> int:
        return sum(max(0, a[1] - b[0]) for a, b in zip(self.spans, self.spans[1:], strict=False))


@dataclass
class Timeline:
    marks: dict[str, float] = field(default_factory=dict)

    def phase(self, at: float) -> str:
        if at < self.marks.get("kill", float("inf")):
            return "before"
        if at < self.marks.get("settled", float("inf")):
            return "during"
        return "after"


def upload(url: str, key: str, body: bytes, retry: bool = True) -> tuple[int, int, float]:
    """(final status, retries, seconds): the documented rule, Retry-After honoured."""
    started = time.monotonic()
    retries = 0
    while True:
        try:
            with httpx.Client(headers={"X-API-Key": key}, timeout=120) as c:
                r = c.post(f"{url}/embed", files={"audio": ("c.wav", body, "audio/wav")})
            status, wait = r.status_code, float(r.headers.get("Retry-After", "1"))
        except httpx.TransportError:
            status, wait = 599, 1.0
        if not retry or status not in (502, 503, 599) or retries >= RETRIES:
            return status, retries, time.monotonic() - started
        retries += 1
        time.sleep(wait)


def tasks_of(fleet: Fleet) -> dict[int, str]:
    """Worker pid → entry name, for the task each ready came from."""
    names: dict[int, str] = {}
    for i, entry in enumerate(fleet.entries):
        if entry.proc is not None and entry.proc.poll() is None:
            for child in psutil.Process(entry.proc.pid).children(recursive=True):
                names[child.pid] = f"entry{i}@{entry.proc.pid}"
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--uploaders", type=int, default=2, help="uploads kept in flight")
    parser.add_argument("--seconds", type=int, default=90, help="audio per stream (× 3 s)")
    parser.add_argument("--kill-at", type=float, default=20.0)
    parser.add_argument("--term-at", type=float, default=50.0)
    args = parser.parse_args()
    seconds = args.seconds - args.seconds % int(HOP_S)
    with tempfile.TemporaryDirectory(prefix="7s-fleet-") as tmp:
        fleet = Fleet(
            REPO / "models",
            Path(tmp),
            extra_env={
                "SEVENSENSE_SERVING__STREAM__MAX_PER_KEY": "256",
                "SEVENSENSE_SERVING__STREAM__MAX_TOTAL": "256",
            },
        )
        fleet.start()
        try:
            report = run(fleet, args.streams, args.uploaders, seconds, args.kill_at, args.term_at)
        finally:
            fleet.stop()
    report["load"] = Path("/proc/loadavg").read_text().split()[:3]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "fleet.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def run(
    fleet: Fleet, n: int, uploaders: int, seconds: int, kill_at: float, term_at: float
) -> dict[str, Any]:
    key = fleet.keys["partner"]
    clip = CLIP.read_bytes()
    line = Timeline()
    t0 = time.monotonic()
    names: dict[int, str] = dict(tasks_of(fleet))
    stream_lat: list[tuple[float, float]] = []
    sources: dict[int, Counted] = {}
    events: dict[int, list[tuple[float, str, bool]]] = {}
    uploads: list[tuple[float, int, int, float]] = []
    draining_uploads: list[int] = []
    stop = threading.Event()

    def uploader() -> None:
        while not stop.is_set():
            at = time.monotonic() - t0
            status, retries, took = upload(fleet.url, key, clip)
            uploads.append((at, status, retries, took))

    def chaos() -> None:
        time.sleep(kill_at)
        line.marks["kill"] = time.monotonic() - t0
        fleet.kill(0)
        fleet.restart(0)
        names.update(tasks_of(fleet))
        time.sleep(max(0.0, term_at - (time.monotonic() - t0)))
        # Eight uploads in flight on the task when it is told to stop: they must finish.
        inflight = [
            threading.Thread(
                target=lambda: draining_uploads.append(
                    upload(fleet.entries[1].url, key, clip, retry=False)[0]
                )
            )
            for _ in range(8)
        ]
        for t in inflight:
            t.start()
        time.sleep(1.0)
        line.marks["term"] = time.monotonic() - t0
        line.marks["drain_s"] = fleet.terminate(1)
        for t in inflight:
            t.join()
        fleet.restart(1)
        names.update(tasks_of(fleet))
        line.marks["settled"] = time.monotonic() - t0

    async def streams() -> list[StreamRun | BaseException]:
        rng = random.Random(n)

        async def one(i: int) -> StreamRun:
            log = events.setdefault(i, [])

            def seen(body: dict[str, Any]) -> None:
                kind = str(body.get("type"))
                log.append((time.monotonic(), kind, bool(body.get("rebuilt"))))
                if kind == "window":
                    stream_lat.append((time.monotonic() - t0, float(body["latency_ms"])))

            await asyncio.sleep(rng.random() * 2.0)
            sources[i] = Counted(rng.random() * 120.0, seconds)
            return await stream_audio(
                fleet.url.replace("http://", "ws://") + "/stream",
                sources[i],
                {"top_k": 5, "stream_id": f"fleet-{i}", "include_embedding": False},
                api_key=key,
                speed=1.0,
                frame_ms=100.0,
                retries=8,
                on_message=seen,
            )

        return await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)

    workers = [threading.Thread(target=uploader) for _ in range(uploaders)]
    chaos_thread = threading.Thread(target=chaos)
    for t in [*workers, chaos_thread]:
        t.start()
    results = asyncio.run(streams())
    chaos_thread.join()
    stop.set()
    for t in workers:
        t.join()

    expected = seconds // int(HOP_S)
    per_stream = []
    for i, r in enumerate(results):
        if isinstance(r, BaseException):
            per_stream.append({"stream": i, "failed": repr(r)[:200]})
            continue
        per_stream.append(
            {
                "stream": i,
                "windows": len(r.windows),
                "lost": expected - len(r.windows),
                "duplicated": r.duplicates,
                "resumes": r.reconnects,
                "handed_off": r.handed_off,
                "landed": [
                    {
                        "task": names.get(int(ready.task.rsplit(":", 1)[1]), ready.task),
                        "rebuilt": ready.rebuilt,
                        "from_sample": ready.received_frames,
                    }
                    for ready in r.readies[1:]
                ],
            }
        )
    resent = [sources[i].resent_samples() * 2 for i in sources if len(sources[i].spans) > 1]
    to_window = [ms for i in events for ms in _first_windows(events[i])]
    report: dict[str, Any] = {
        "streams": n,
        "uploaders": uploaders,
        "audio_s_per_stream": seconds,
        "marks_s": {k: round(v, 2) for k, v in line.marks.items()},
        "streams_failed": sum(1 for s in per_stream if "failed" in s),
        "windows_lost": sum(s.get("lost", 0) for s in per_stream),
        "windows_duplicated": sum(s.get("duplicated", 0) for s in per_stream),
        "stream_resumes": sum(s.get("resumes", 0) for s in per_stream),
        "uploads": len(uploads),
        "uploads_failed": sum(1 for u in uploads if u[1] != 200),
        "upload_retries": sum(u[2] for u in uploads),
        "uploads_in_flight_at_sigterm": draining_uploads,
        "resume_cost": {
            "bytes_resent_per_resumed_stream_p50_max": _p50max(resent),
            "rebuilt_ready_to_first_window_ms_p50_max": _p50max(to_window),
        },
        "latency_ms": {},
        "per_stream": per_stream,
    }
    for phase in ("before", "during", "after"):
        w = [ms for at, ms in stream_lat if line.phase(at) == phase]
        u = [took * 1e3 for at, status, _, took in uploads if line.phase(at) == phase]
        report["latency_ms"][phase] = {
            "window_p50_p99": _p(w),
            "upload_p50_p99": _p(u),
            "windows": len(w),
            "uploads": len(u),
        }
    return report


def _first_windows(log: list[tuple[float, str, bool]]) -> list[float]:
    """ms from each rebuilt ``ready`` to the next window on that stream."""
    out, since = [], None
    for at, kind, rebuilt in log:
        if kind == "ready" and rebuilt:
            since = at
        elif kind == "window" and since is not None:
            out.append((at - since) * 1e3)
            since = None
    return out


def _p50max(values: list[float] | list[int]) -> list[float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return [round(float(ordered[len(ordered) // 2]), 1), round(float(ordered[-1]), 1)]


def _p(values: list[float]) -> list[float] | None:
    if not values:
        return None
    s = latency_stats(values)
    return [round(s["p50_ms"], 1), round(s["p99_ms"], 1)]


if __name__ == "__main__":
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    main()
