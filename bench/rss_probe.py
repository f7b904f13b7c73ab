"""Embed one recording to Parquet in a fresh process and print its peak RSS as JSON.

Run in a subprocess so the figure is this job's alone: ``python -m bench.rss_probe FILE``.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from sevensense.inference.engine import EmbeddingEngine, EmbedOptions
from sevensense.inference.recordings import embed_recordings
from sevensense.outputs.writers import open_writer
from sevensense.settings import load_settings


def peak_rss_mb() -> float:
    """This process image's own peak RSS.

    Linux's ru_maxrss survives exec and so reports the forking parent's size when that was
    larger (a pytest run holding several models, say); VmHWM belongs to the new image alone.
    """
    if sys.platform.startswith("linux"):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", type=Path)
    parser.add_argument("--model", default="perch-contract")
    parser.add_argument("--models-dir", type=Path, default=None)
    parser.add_argument("--overlap", type=float, default=0.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    overrides = {"models_dir": args.models_dir} if args.models_dir else {}
    settings = load_settings("default", **overrides)
    settings.inference.providers = ["cpu"]
    settings.inference.intra_threads = args.threads
    engine = EmbeddingEngine(settings)
    model = engine.model(args.model)
    baseline_mb = peak_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        writer = open_writer(Path(tmp) / "out.parquet", "parquet", model.manifest.embedding_dim)
        start = time.perf_counter()
        summary = embed_recordings(
            engine,
            [args.path],
            writer.write,
            model=model,
            options=EmbedOptions(overlap=args.overlap),
        )
        writer.close(summary.to_dict())
        wall = time.perf_counter() - start
    peak_mb = peak_rss_mb()
    print(
        json.dumps(
            {
                "windows": summary.windows,
                "audio_s": summary.audio_s,
                "wall_s": wall,
                "x_realtime": summary.audio_s / wall if wall else None,
                "peak_rss_mb": peak_mb,
                "after_model_load_rss_mb": baseline_mb,
                "failed": [r.source for r in summary.failed],
                "prefetch_windows": settings.inference.prefetch_windows,
            }
        )
    )


if __name__ == "__main__":
    main()
