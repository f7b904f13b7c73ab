"""An add's fsync while a compaction writes its new file (issue 24): another process appends
a log-sized record and fsyncs it every ``--every-ms`` (what an add does to its vector log),
while this one writes ``--mb`` of random bytes beside it, the way a compaction wrote
``usearch.index`` before (one write at page-cache speed, then one fsync) and the way it does
now (:func:`sevensense.index.vector_log.write_synced`: synced every ``SYNC_CHUNK_BYTES``).
Prints the appender's fsync latencies during each write and how long each write took.

``--gil``: instead, how long each step of a compaction keeps Python's GIL, i.e. stalls every
other thread of the process (each HTTP request and stream of an entry process): a thread
sleeps 1 ms at a time and records its longest wait, while each step runs on another thread,
on an index of ``--n`` vectors of ``--dim`` (float16, the settings' HNSW parameters; cached in
``--keep`` if given) with ``--logged`` new records and 1% of its vectors deleted. The steps
as ``SpaceVectors.build`` runs them and as tried instead (a file read by Python, usearch
progress callbacks that release the GIL: not used, see ``yielding``); then
``SpaceVectors.build`` as a whole, with the ``sevensense`` on ``PYTHONPATH``."""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
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


class Ticker:
    """A thread that sleeps 1 ms at a time: its longest wait is the longest time another
    thread of this process kept the GIL (or the CPU) from it."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            self.gaps.append(now - last)
            last = now

    def __enter__(self) -> Ticker:
        self._thread.start()
        time.sleep(0.02)
        self.gaps.clear()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def report(self, seconds: float) -> dict[str, Any]:
        gaps = np.asarray(self.gaps or [0.0]) * 1000
        return {
            "s": round(seconds, 3),
            "longest_wait_ms": round(float(gaps.max()), 1),
            "wait_p99_ms": round(float(np.percentile(gaps, 99)), 2),
            "waits_over_20_ms": [round(float(g)) for g in gaps[gaps > 20]],
        }


def ticked(fn: Callable[[], Any]) -> tuple[dict[str, Any], Any]:
    """``fn()`` on its own thread (as a background compaction runs) while a Ticker ticks."""
    out: list[Any] = []
    with Ticker() as ticker:
        worker = threading.Thread(target=lambda: out.append(fn()))
        t = time.perf_counter()
        worker.start()
        worker.join()
        seconds = time.perf_counter() - t
    return ticker.report(seconds), out[0] if out else None


def yielding() -> Callable[[int, int], bool]:
    """Tried, not used: a usearch progress callback that releases the GIL (``time.sleep(0)``)
    every 2 ms. usearch 2.26 calls it with the GIL held during load and save, once per graph
    node, and it does let the ticker run; but in the ingest bench (other threads running
    Python meanwhile) a compaction with it crashed (with add's and save's) or deadlocked
    (load's and save's, or load's alone). Measured here only."""
    due = time.perf_counter() + 0.002

    def progress(done: int, total: int) -> bool:
        nonlocal due
        if time.perf_counter() >= due:
            time.sleep(0)
            due = time.perf_counter() + 0.002
        return True

    progress.__annotations__ = {"done": int, "total": int, "return": bool}  # usearch checks
    return progress


def load_buffer(path: Path, progress: Callable[[int, int], bool] | None = None) -> Any:
    """Tried, not used: the file read by Python (``read`` releases the GIL) and loaded by
    usearch from that buffer (which keeps the GIL, like ``restore(path)`` throughout)."""
    from usearch.index import Index

    data = path.read_bytes()
    meta = Index.metadata(data)
    index = Index(ndim=meta["dimensions"], dtype=meta["kind_scalar"], metric=meta["kind_metric"])
    index.load(data, progress=progress)
    return index


def gil_steps(args: argparse.Namespace) -> dict[str, Any]:
    import onnxruntime  # noqa: F401  (before usearch, as sevensense.index.hoplite does)
    from usearch.index import Index

    from bench.index_adds import clustered_chunks
    from sevensense.index import hoplite_vectors as hv
    from sevensense.index.records import SpaceInfo, SpaceKey
    from sevensense.settings import IndexSettings

    info = SpaceInfo(key=SpaceKey(model_name="bench", model_version="1"), dim=args.dim)
    settings = IndexSettings()
    keep = Path(args.keep or tempfile.mkdtemp(prefix="7s-gil-"))
    keep.mkdir(parents=True, exist_ok=True)
    base = keep / f"base-{args.n}x{args.dim}.index"
    source = clustered_chunks(10**12, args.dim, chunk=10_000, seed=1)
    if not base.exists():
        index = hv.SpaceVectors(keep, info, settings).new_index()
        done = 0
        while done < args.n:
            vecs = next(source)[: args.n - done]
            index.add(np.arange(done, done + len(vecs), dtype=np.uint64), vecs, threads=0)
            done += len(vecs)
        index.save(str(base))
        del index
    rng = np.random.default_rng(0)
    have = np.arange(args.n, dtype=np.uint64)
    live = np.sort(rng.choice(have, size=args.n - args.n // 100, replace=False))
    keys = np.arange(args.n, args.n + args.logged, dtype=np.uint64)
    live = np.concatenate([live, keys])
    vectors = np.concatenate([next(source) for _ in range(args.logged // 10_000 + 1)])
    vectors = vectors[: args.logged]
    report: dict[str, Any] = {"n": args.n, "dim": args.dim, "logged": args.logged}
    report["file_mb"] = round(base.stat().st_size / 2**20, 1)
    steps: dict[str, Any] = {}
    if not args.build_only:  # the steps, and what was tried instead
        for run in range(1, args.repeat + 1):  # alternately: the machine drifts
            steps[f"restore(path, view=False) {run}"], index = ticked(
                lambda: Index.restore(str(base), view=False)
            )
            del index
            steps[f"read_bytes + load(buffer) (tried) {run}"], index = ticked(
                lambda: load_buffer(base)
            )
            del index
            steps[f"read_bytes + load(buffer, progress=yielding()) (tried) {run}"], index = ticked(
                lambda: load_buffer(base, yielding())
            )
            if run < args.repeat:
                del index
        steps["keys"], got = ticked(lambda: np.asarray(index.keys, dtype=np.uint64))
        steps["np.isin x3"], drop = ticked(
            lambda: (
                got[~np.isin(got, live) | np.isin(got, keys)],
                np.isin(keys, live),
            )[0]
        )
        # remove, add, save: on the loaded index, and on a copy of it
        copy = Index.restore(str(base), view=False)
        assert copy is not None
        steps[f"remove {len(drop)}"], _ = ticked(lambda: copy.remove(drop))
        steps[f"remove {len(drop)} in calls of 4096"], _ = ticked(
            lambda: [index.remove(drop[i : i + 4096]) for i in range(0, len(drop), 4096)]
        )
        steps[f"add {len(keys)}"], _ = ticked(lambda: copy.add(keys, vectors, threads=0))
        steps[f"add {len(keys)} (again)"], _ = ticked(lambda: index.add(keys, vectors, threads=0))
        for run in range(1, args.repeat + 1):
            steps[f"save() {run}"], data = ticked(copy.save)
            del data
            steps[f"save(progress=yielding()) (tried, not used) {run}"], data = ticked(
                lambda: index.save(progress=yielding())
            )
            if run < args.repeat:
                del data
        del copy, index
        steps["crc32"], _ = ticked(lambda: zlib.crc32(data))
        steps["write_synced"], _ = ticked(lambda: write_synced(keep / "steps.tmp", data))
        (keep / "steps.tmp").unlink()
        del data
    report["steps"] = steps
    # the whole build, with the sevensense on PYTHONPATH
    space = keep / "space"
    space.mkdir(exist_ok=True)
    if not (space / hv.UINDEX_FILENAME).exists():
        os.link(base, space / hv.UINDEX_FILENAME)
    vectors_of = hv.SpaceVectors(space, info, settings)
    snap = hv.Snapshot(hv.VectorState(), live, keys, vectors)
    for run in range(args.repeat):
        report[f"build {run + 1}"], (temp, _) = ticked(lambda: vectors_of.build(snap))
        Path(temp).unlink()
    report["sevensense"] = str(Path(hv.__file__).parent.parent)
    report["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--mb", type=int, default=300, help="size of the compaction's file")
    parser.add_argument("--every-ms", type=float, default=50.0)
    parser.add_argument("--dir", default=None, help="where (default: the temp directory)")
    parser.add_argument("--gil", action="store_true", help="the GIL during each step (above)")
    parser.add_argument("--n", type=int, default=100_000, help="--gil: vectors in the index")
    parser.add_argument("--dim", type=int, default=1024, help="--gil")
    parser.add_argument("--logged", type=int, default=10_000, help="--gil: records to fold")
    parser.add_argument("--keep", default=None, help="--gil: keep the index here, reuse it")
    parser.add_argument("--build-only", action="store_true", help="--gil: not the steps")
    parser.add_argument("--repeat", type=int, default=1, help="--gil: loads, saves, builds")
    args = parser.parse_args()
    if args.gil:
        print(json.dumps(gil_steps(args), indent=2))
        return
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
