"""Sustained ingest with ``index=true`` (``make bench-index-ingest``): real-time streams
through a real server, each window added to the index by the stream's own path (the
session's index batches, ``SimilarityService.add_results`` in a worker thread), against the
same streams without indexing, while a client searches the index over HTTP.

The service graph is started as ``load_tests/streams.py`` starts it (BirdNET, 3-s windows,
hop 3 s: one window per stream every 3 s, so 64 streams add 21.3 windows/s, in batches of
``serving.stream.index_batch``); the hoplite index lives in the server's state directory.
Phases, in one run, after an untimed warm-up that indexes a few windows (so that the space
exists): without indexing, with indexing, without again (the machine's drift shows in the
two without). Throughout, a client thread posts ``/search`` (an embedding, k = 10, the
streams' space) every ``--search-every-s``; its latency is the HTTP round trip. A stream
writes its windows to the index every ``serving.stream.index_batch`` (32) windows and at
its end, so a phase should run past 96 s of audio to include mid-stream writes. Window
latency is the server's figure (last sample received → result sent). Goal: indexed p99
within 1.2× of without, search p99 under 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from load_tests.server import REPO, Service, base_env, free_port
from load_tests.stats import cpu_s, latency_stats
from load_tests.streams import level
from sevensense.serving.access.keys import generate_key, hash_key
from sevensense.settings import repo_root

SPACE = {"model": "birdnet-v2.4:2.4.0", "transform": "full"}
DIM = 1024


def _searches(service: Service, stop: threading.Event, every_s: float, out: dict[str, Any]) -> None:
    """Searches until ``stop``; into ``out``: latencies of answered ones, and how many were
    refused (404: the space does not exist yet; 0: no answer within 30 s)."""
    rng = np.random.default_rng(0)
    ok: list[float] = []
    refused: dict[int, int] = {}
    first_refusal: dict[int, str] = {}
    with service.client("bench", timeout=30.0) as client:
        while not stop.wait(every_s):
            q = rng.normal(size=DIM)
            body = {**SPACE, "k": "10", "embedding": json.dumps((q / np.linalg.norm(q)).tolist())}
            t = time.perf_counter()
            try:
                answer = client.post("/search", data=body)
                status = answer.status_code
            except httpx.HTTPError:  # a timeout on an overloaded server
                status = 0
            took = (time.perf_counter() - t) * 1000
            if status == 200:
                ok.append(took)
            else:
                refused[status] = refused.get(status, 0) + 1
                if status and status not in first_refusal:
                    first_refusal[status] = answer.text[:300]
    out.update(answered=len(ok), refused=refused, first_refusal=first_refusal)
    if ok:
        out["latency"] = {k: round(v, 1) for k, v in latency_stats(ok).items()}


def in_process(streams: int, seconds: float, prefill: int, logged: int) -> dict[str, Any]:
    """The same add rate without the streams: every stream's index write (32 windows of
    1024-d, its own recording, one tenant per stream) straight into ``HopliteIndex.add``,
    staggered so that the writes of ``streams`` streams arrive evenly (one every
    96 s / streams), on an index of ``prefill`` compacted entries plus ``logged`` in its
    log (so that a background compaction falls inside the run). Searches (k = 10, every
    50 ms, alternately unfiltered and one stream's tenant) run for ``seconds`` without the
    writes, then for ``seconds`` with them."""
    from bench.index_adds import clustered_chunks
    from sevensense.index.hoplite import HopliteIndex
    from sevensense.index.records import EntryBatch, EntryMeta, Scope, SpaceInfo, SpaceKey
    from sevensense.settings import IndexSettings

    per_write = 32
    every_s = 3.0 * per_write / streams
    info = SpaceInfo(key=SpaceKey(model_name="birdnet-v2.4", model_version="2.4.0"), dim=DIM)
    source = clustered_chunks(10**12, DIM, chunk=10_000, seed=1)
    tmp = Path(tempfile.mkdtemp(prefix="7s-ingest-"))
    index = HopliteIndex(tmp, "ingest", IndexSettings())

    def metas(stream: int, start: int, n: int) -> list[EntryMeta]:
        return [
            EntryMeta(
                recording_id=f"stream-{stream}",
                start_s=3.0 * j,
                end_s=3.0 * j + 3.0,
                tenant=f"t{stream % 8}",
            )
            for j in range(start, start + n)
        ]

    done = 0
    for upto in (prefill, prefill + logged):  # compacted, then left in the log
        while done < upto:
            vecs = next(source)[: min(1000, upto - done)]  # a recording of 1,000 windows
            index.add(info, EntryBatch(vecs, metas(1000 + done // 1000, done, len(vecs))))
            done += len(vecs)
        if upto == prefill:
            index.compact()
    queries = next(source)
    writes = int(seconds / every_s) + 2
    pool = np.concatenate([next(source) for _ in range(writes * per_write // 10_000 + 1)])
    searches: dict[str, list[float]] = {"without": [], "with": []}
    adds: list[float] = []

    def search_for(phase: str, stop: threading.Event) -> None:
        i = 0
        while not stop.wait(0.05):
            scope = Scope.everyone() if i % 2 else Scope.of(f"t{i % 8}")
            t = time.perf_counter()
            index.search(info.key, queries[i % len(queries)], 10, scope)
            searches[phase].append((time.perf_counter() - t) * 1000)
            i += 1

    for i in range(16):  # each scope's first query builds its cached block: not timed
        scope = Scope.everyone() if i % 2 else Scope.of(f"t{i % 8}")
        index.search(info.key, queries[i % len(queries)], 10, scope)
    for phase in ("without", "with"):
        stop = threading.Event()
        searcher = threading.Thread(target=search_for, args=(phase, stop))
        searcher.start()
        started = time.perf_counter()
        write = 0
        while time.perf_counter() - started < seconds:
            if phase == "with":
                stream, n = write % streams, write // streams
                vecs = pool[write * per_write : (write + 1) * per_write]  # made beforehand
                t = time.perf_counter()
                index.add(info, EntryBatch(vecs, metas(stream, n * per_write, per_write)))
                adds.append((time.perf_counter() - t) * 1000)
                write += 1
            time.sleep(max(0.0, started + (write or 1) * every_s - time.perf_counter()))
        stop.set()
        searcher.join()
    compactions = index._handle(info.key).vectors.log.generation
    index.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "mode": "in-process: HopliteIndex.add at the streams' write rate (no server)",
        "streams": streams,
        "windows_per_s": round(streams / 3.0, 1),
        "writes_of_32_per_s": round(1 / every_s, 2),
        "prefill": prefill,
        "logged_at_start": logged,
        "log_generation_at_end": compactions,
        "add": {k: round(v, 2) for k, v in latency_stats(adds).items()} | {"n": len(adds)},
        **{
            f"search_{phase}_writes": {k: round(v, 2) for k, v in latency_stats(v).items()}
            | {"n": len(v)}
            for phase, v in searches.items()
        },
        "search_p99_with_over_without": round(
            float(np.percentile(searches["with"], 99) / np.percentile(searches["without"], 99)),
            2,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60.0, help="audio per stream per phase")
    parser.add_argument("--search-every-s", type=float, default=0.5)
    parser.add_argument(
        "--compact-after", type=int, default=None, help="server: index.compact_after"
    )
    parser.add_argument(
        "--phases",
        default="off,on,off",
        help="server: index=true off/on per phase, in order (comma-separated)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="no server: the streams' index writes at their rate straight into the index",
    )
    parser.add_argument("--prefill", type=int, default=20_000, help="--in-process: entries")
    parser.add_argument("--logged", type=int, default=8_000, help="--in-process: in the log")
    args = parser.parse_args()
    if args.in_process:
        result = in_process(args.streams, args.seconds, args.prefill, args.logged)
        result["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
        out = repo_root() / "out" / "bench" / f"index_ingest_inprocess_{date.today()}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return
    key = generate_key()
    report: dict[str, Any] = {
        "date": str(date.today()),
        "streams": args.streams,
        "windows_per_s_offered": round(args.streams / 3.0, 1),
        "audio_s_per_stream_per_phase": args.seconds,
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
        "phases": [],
    }
    with tempfile.TemporaryDirectory(prefix="7s-ingest-") as tmp:
        state = Path(tmp)
        env = base_env(
            REPO / "models",
            state,
            [{"id": "bench", "sha256": hash_key(key), "scopes": ["embed", "read"]}],
            SEVENSENSE_SERVING__STREAM__MAX_PER_KEY="1024",
            SEVENSENSE_SERVING__STREAM__MAX_TOTAL="1024",
            SEVENSENSE_INDEX__DIR=str(state / "index"),
            **(
                {"SEVENSENSE_INDEX__COMPACT_AFTER": str(args.compact_after)}
                if args.compact_after
                else {}
            ),
        )
        service = Service(free_port(), env, state / "server.log", {"bench": key})
        service.start()
        try:
            url = service.url.replace("http://", "ws://") + "/stream"
            server = psutil.Process(service.proc.pid) if service.proc else None
            # untimed: a few windows indexed, so that the space exists for the searches
            asyncio.run(level(url, key, 4, 4 * 3.0, {"index": True}))
            for indexing in (p.strip() == "on" for p in args.phases.split(",")):
                stop = threading.Event()
                found: dict[str, Any] = {}
                searcher = threading.Thread(
                    target=_searches, args=(service, stop, args.search_every_s, found)
                )
                searcher.start()
                before = cpu_s(server)
                result = asyncio.run(
                    level(url, key, args.streams, args.seconds, {"index": indexing})
                )
                after = cpu_s(server)
                stop.set()
                searcher.join()
                result["search"] = found
                result["index"] = indexing
                result["server_cpu_s"] = {k: round(after[k] - before.get(k, 0.0), 1) for k in after}
                report["phases"].append(result)
                print(json.dumps(result), flush=True)
        finally:
            service.stop()
    without = [p["latency_server"]["p99_ms"] for p in report["phases"] if not p["index"]]
    with_index = [p["latency_server"]["p99_ms"] for p in report["phases"] if p["index"]]
    if without and with_index:
        report["window_p99_indexed_over_without"] = round(with_index[0] / max(without), 2)
    report["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    out = repo_root() / "out" / "bench" / f"index_ingest_{report['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "phases"}, indent=2))


if __name__ == "__main__":
    main()
