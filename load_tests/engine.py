"""The engine's best offline batch throughput: the yardstick for the service's windows/s.

    .venv/bin/python -m load_tests.engine --model birdnet-v2.4 --threads 2

Prepared windows of the same soundscape the load test posts, run straight through
``EmbeddingEngine.run_batch`` on the CPU provider (embedding and logits, as a default
``/embed`` request asks for top-k species), at each batch size; the best size counts. The
runs of the sizes alternate, median of ``--rounds``, because these hosts are noisy.
``load_tests/run.py`` runs this as a subprocess: it is itself monkey-patched by gevent and
must not compete for the two cores while measuring.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from sevensense.artifacts.manifest import OutputRole
from sevensense.audio.pipeline import prepare_windows
from sevensense.inference.engine import EmbeddingEngine
from sevensense.settings import load_settings, repo_root

SOUNDSCAPE = repo_root().parent / "shared" / "audio" / "soundscape_birdnet_120s_48k.flac"


def measure(
    model: str,
    threads: int,
    sizes: list[int],
    rounds: int = 5,
    models_dir: Path | None = None,
) -> dict[str, Any]:
    settings = load_settings("default")
    if models_dir is not None:
        settings.models_dir = models_dir
    settings.inference.providers = ["cpu"]
    settings.inference.intra_threads = threads
    engine = EmbeddingEngine(settings)
    loaded = engine.model(model)
    windows = [w.samples for w in prepare_windows(SOUNDSCAPE, engine.preprocess_config(loaded))]
    total = max(sizes) * 3
    stack = np.stack([windows[i % len(windows)] for i in range(total)]).astype(np.float32)
    roles = [OutputRole.EMBEDDING, OutputRole.LOGITS]
    batches = {n: [stack[i : i + n] for i in range(0, total, n)] for n in sizes}
    times: dict[int, list[float]] = {n: [] for n in sizes}
    for n in sizes:
        engine.run_batch(loaded, batches[n][0], roles)
    for _ in range(rounds):
        for n in sizes:
            start = time.perf_counter()
            for batch in batches[n]:
                engine.run_batch(loaded, batch, roles)
            times[n].append(time.perf_counter() - start)
    per_size = {n: total / statistics.median(t) for n, t in times.items()}
    best = max(per_size, key=lambda n: per_size[n])
    return {
        "model": str(loaded.identity),
        "provider": loaded.provider,
        "threads": threads,
        "allow_spinning": settings.inference.allow_spinning,
        "windows_per_run": total,
        "rounds": rounds,
        "windows_per_s": {str(n): v for n, v in per_size.items()},
        "best_batch": best,
        "best_windows_per_s": per_size[best],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="birdnet-v2.4")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", default="8,16,32")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models-dir", type=Path, default=None)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(json.dumps(measure(args.model, args.threads, sizes, args.rounds, args.models_dir)))


if __name__ == "__main__":
    main()
