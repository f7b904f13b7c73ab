"""Embed recordings into an index one after another in a fresh process, printing after each
its windows and the process's peak RSS as JSON lines: the peak must not grow with the
recording's length (windows are added in batches as they stream past).

``python -m bench.index_rss FILE... --index-dir DIR [--backend pgvector --pg-url URL]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.rss_probe import peak_rss_mb
from sevensense.index.ingest import Indexer, space_info
from sevensense.index.store import open_index
from sevensense.inference.engine import EmbeddingEngine, EmbedOptions
from sevensense.inference.recordings import embed_recordings
from sevensense.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", type=Path, nargs="+")
    parser.add_argument("--model", default="perch-contract")
    parser.add_argument("--models-dir", type=Path, default=None)
    parser.add_argument("--index-dir", type=Path, required=True)
    parser.add_argument("--backend", choices=["hoplite", "pgvector"], default="hoplite")
    parser.add_argument("--pg-url", default=None)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    overrides: dict[str, object] = {"models_dir": args.models_dir} if args.models_dir else {}
    overrides["index"] = {"backend": args.backend, "dir": args.index_dir, "pg_url": args.pg_url}
    settings = load_settings("default", **overrides)
    settings.inference.providers = ["cpu"]
    settings.inference.intra_threads = args.threads
    engine = EmbeddingEngine(settings)
    model = engine.model(args.model)
    index = open_index(settings, "rss")
    info = space_info(model.manifest)
    print(json.dumps({"stage": "loaded", "peak_rss_mb": round(peak_rss_mb(), 1)}), flush=True)
    for path in args.paths:
        indexer = Indexer(index, info, "bench")
        start = time.perf_counter()
        summary = embed_recordings(
            engine, [path], indexer, model=model, options=EmbedOptions(overlap=args.overlap)
        )
        indexer.flush()
        print(
            json.dumps(
                {
                    "path": str(path),
                    "audio_s": round(summary.audio_s, 3),
                    "windows": summary.windows,
                    "added": indexer.added,
                    "wall_s": round(time.perf_counter() - start, 3),
                    "peak_rss_mb": round(peak_rss_mb(), 1),
                }
            ),
            flush=True,
        )
    index.close()


if __name__ == "__main__":
    main()
