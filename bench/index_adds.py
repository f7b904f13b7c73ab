"""Add latency against index size on the hoplite backend (``make bench-index-adds``).

The index grows in steps (10k, 100k, 300k, 1M clustered 256-d vectors: a PCA space; each
step loaded and compacted, as a bulk load would be). At each size, small adds (16 windows,
what a stream or a short ``/embed`` adds) are timed interleaved with the behaviour this
replaced, measured in the same run: the same vectors added to the whole index in memory,
which is then saved to a temporary file and moved over ``usearch.index`` (the old
``add()``; its SQLite rows are not counted, which flatters it). Also per size: the time of a
compaction (which ours pays once per ``index.compact_after`` logged vectors) and so the
amortised cost per add. The run stops growing once a step would exceed ``--budget-s`` and
says where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from sevensense.index.hoplite import HopliteIndex
from sevensense.index.records import EntryBatch, EntryMeta, SpaceInfo, SpaceKey
from sevensense.settings import IndexSettings, repo_root

KEY = SpaceKey(model_name="bench", model_version="1", transform="pca256")
SIZES = (10_000, 100_000, 300_000, 1_000_000)
BATCH = 16
CHUNK = 100_000


def clustered_chunks(n: int, dim: int, chunk: int = CHUNK, seed: int = 0) -> Iterator[np.ndarray]:
    """bench.index.clustered's distribution (a 64-d latent, 500 clusters, noise), made in
    chunks so that a million rows never need their float64 intermediate at once."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(500, 64))
    projection = rng.normal(size=(64, dim)) / 8.0
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        latent = centres[rng.integers(0, 500, m)] + 0.35 * rng.normal(size=(m, 64))
        x = latent @ projection + 0.05 * rng.normal(size=(m, dim))
        yield (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def metas(start: int, n: int, prefix: str = "r") -> list[EntryMeta]:
    """Entries ``start`` … ``start + n - 1``: 1,000 windows per recording."""
    return [
        EntryMeta(
            recording_id=f"{prefix}{j // 1000}",
            start_s=float(j % 1000),
            end_s=float(j % 1000) + 3,
            tenant="bench",
        )
        for j in range(start, start + n)
    ]


def _old_add(path: Path, keys: np.ndarray, vectors: np.ndarray, loaded: Any) -> float:
    """The replaced add: the whole index in memory, saved beside the file and moved over it."""
    started = time.perf_counter()
    loaded.add(keys, vectors)
    temp = path.with_name(".old-add.tmp")
    loaded.save(str(temp))
    os.replace(temp, path.with_name("old.index"))
    return time.perf_counter() - started


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def run(sizes: tuple[int, ...], dim: int, adds: int, budget_s: float) -> dict[str, Any]:
    from usearch.index import Index

    root = Path(tempfile.mkdtemp(prefix="bench-index-adds-"))
    settings = IndexSettings(compact_after=10**9)  # compactions only where this bench says
    index = HopliteIndex(root, "adds", settings)
    info = SpaceInfo(key=KEY, dim=dim)
    space = root / "adds" / KEY.slug
    source = clustered_chunks(10**12, dim)  # lazily, as many as the run takes
    pending = np.zeros((0, dim), np.float32)
    rows = 0
    extra = 0
    steps: list[dict[str, Any]] = []
    stopped = None
    started = time.perf_counter()
    last_step_s = 0.0
    for size in sizes:
        if steps and time.perf_counter() - started + last_step_s * size / rows > budget_s:
            stopped = f"before {size:,}: the next step would pass --budget-s {budget_s:.0f}"
            break
        step = time.perf_counter()
        while rows < size:
            while len(pending) < min(CHUNK, size - rows):
                pending = np.concatenate([pending, next(source)])
            take = min(CHUNK, size - rows)
            index.add(info, EntryBatch(pending[:take], metas(rows, take)))
            pending = pending[take:]
            rows += take
            index.compact()
        load_s = time.perf_counter() - step
        loaded = Index.restore(str(space / "usearch.index"), view=False)
        assert loaded is not None
        # untimed: the first add after a compaction maps the new file and checks its CRC
        index.add(info, EntryBatch(next(source)[:BATCH], metas(len(steps) * BATCH, BATCH, "w")))
        ours: list[float] = []
        old: list[float] = []
        n_old = adds if size <= 100_000 else max(3, adds // 5)
        for i in range(adds):
            while len(pending) < BATCH:
                pending = np.concatenate([pending, next(source)])
            vecs, pending = pending[:BATCH], pending[BATCH:]
            batch = EntryBatch(vecs, metas(extra, BATCH, prefix="x"))
            t = time.perf_counter()
            index.add(info, batch)
            ours.append(time.perf_counter() - t)
            if i < n_old:
                keys = np.arange(10**9 + extra, 10**9 + extra + BATCH, dtype=np.uint64)
                old.append(_old_add(space, keys, vecs, loaded))
                os.sync()  # untimed: its dirty pages would otherwise stall our next fsync
            extra += BATCH
        del loaded
        (space / "old.index").unlink(missing_ok=True)
        compact_s = index.compact()[KEY.slug]
        [stats] = index.stats()
        steps.append(
            {
                "entries": stats.entries,
                "load_and_compact_s": round(load_s, 1),
                "ours_add_ms_p50": round(_pct(ours, 50), 2),
                "ours_add_ms_p99": round(_pct(ours, 99), 2),
                "old_add_ms_p50": round(_pct(old, 50), 1),
                "old_adds_timed": len(old),
                "old_over_ours_p50": round(_pct(old, 50) / _pct(ours, 50), 1),
                "compaction_s": round(compact_s, 2),
                "ours_amortised_ms_per_add": round(
                    _pct(ours, 50) + compact_s * 1000 * BATCH / IndexSettings().compact_after, 2
                ),
                "usearch_index_mb": round((space / "usearch.index").stat().st_size / 1e6, 1),
            }
        )
        print(json.dumps(steps[-1]), flush=True)
        last_step_s = time.perf_counter() - step
    index.close()
    shutil.rmtree(root, ignore_errors=True)
    flat = [s["ours_add_ms_p50"] for s in steps]
    return {
        "dim": dim,
        "batch": BATCH,
        "adds_per_size": adds,
        "compact_after": IndexSettings().compact_after,
        "steps": steps,
        "stopped": stopped,
        "ours_p50_largest_over_smallest": round(flat[-1] / flat[0], 2) if flat else None,
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "cpus": os.cpu_count(),
    }


def across_compaction(size: int, dim: int, cycles: int, compact_after: int) -> dict[str, Any]:
    """Add latency while compactions happen, inline (the add that reaches ``compact_after``
    compacts before it returns, as before) against the background thread, interleaved on
    the same index: per cycle, each mode adds batches of 16 until one of its compactions
    has finished (more adds for the background one: they go on while it runs)."""
    root = Path(tempfile.mkdtemp(prefix="bench-index-adds-bg-"))
    info = SpaceInfo(key=KEY, dim=dim)
    loader = HopliteIndex(root, "adds", IndexSettings(compact_after=10**9))
    source = clustered_chunks(10**12, dim)
    rows = 0
    while rows < size:
        vecs = next(source)[: size - rows]
        loader.add(info, EntryBatch(vecs, metas(rows, len(vecs))))
        loader.compact()
        rows += len(vecs)
    loader.close()
    pending = np.zeros((0, dim), np.float32)
    lat: dict[str, list[float]] = {"inline": [], "background": []}
    compactions = dict.fromkeys(lat, 0)
    for _ in range(cycles):
        for mode, times in lat.items():
            index = HopliteIndex(
                root,
                "adds",
                IndexSettings(
                    compact_after=compact_after, compact_in_background=mode == "background"
                ),
            )
            handle = None
            seen = 0
            while True:
                while len(pending) < BATCH:
                    pending = np.concatenate([pending, next(source)])
                vecs, pending = pending[:BATCH], pending[BATCH:]
                t = time.perf_counter()
                index.add(info, EntryBatch(vecs, metas(rows, BATCH, prefix="c")))
                times.append(time.perf_counter() - t)
                rows += BATCH
                handle = handle or index._handle(KEY)
                gen = handle.vectors.log.generation
                if seen == 0:
                    seen = gen
                elif gen != seen:  # one compaction done (another may have started)
                    break
            compactions[mode] += 1
            index.close()  # untimed: waits for a compaction still running
    shutil.rmtree(root, ignore_errors=True)
    return {
        "entries": rows,
        "dim": dim,
        "batch": BATCH,
        "compact_after": compact_after,
        "cycles": cycles,
        **{
            mode: {
                "adds": len(v),
                "compactions": compactions[mode],
                "p50_ms": round(_pct(v, 50), 2),
                "p99_ms": round(_pct(v, 99), 2),
                "max_ms": round(max(v) * 1000, 1),
            }
            for mode, v in lat.items()
        },
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--adds", type=int, default=30, help="timed adds per size")
    parser.add_argument("--budget-s", type=float, default=600.0)
    parser.add_argument("--quick", action="store_true", help="10k and 30k only (a smoke run)")
    parser.add_argument(
        "--across-compaction",
        type=int,
        default=0,
        metavar="SIZE",
        help="instead: add p50/p99 across compactions at SIZE entries, inline vs background",
    )
    parser.add_argument("--cycles", type=int, default=2)
    parser.add_argument("--compact-after", type=int, default=IndexSettings().compact_after)
    args = parser.parse_args()
    sizes = (10_000, 30_000) if args.quick else tuple(int(s) for s in args.sizes.split(","))
    if args.across_compaction:
        report = across_compaction(
            args.across_compaction, args.dim, args.cycles, args.compact_after
        )
        name = "index_adds_compaction"
    else:
        report = run(sizes, args.dim, args.adds, args.budget_s)
        name = "index_adds"
    out = repo_root() / "out" / "bench" / f"{name}_{date.today():%Y%m%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
