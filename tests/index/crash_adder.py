"""Run by tests/index/test_crash_safety.py in a subprocess that is SIGKILLed at random
points: adds :data:`BATCHES` batches of deterministic windows to an index, in order,
printing ``ready`` once started, the number of each batch it committed, and ``compacting``
after an add that left a background compaction (hoplite) running.

``python -m tests.index.crash_adder hoplite ROOT [FROM]`` or ``... pgvector URL [FROM]``:
from add number FROM on (default 0, all of them).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from sevensense.index.base import VectorIndex
from sevensense.index.records import EntryBatch, EntryMeta, SpaceInfo, SpaceKey
from sevensense.settings import IndexSettings

DIM = 32
BATCH = 25
BATCHES = 40
FIRST = 5_000  # pgvector: the first add is a bulk load (its HNSW graph dropped and rebuilt)
KEY = SpaceKey(model_name="crash", model_version="1")
INFO = SpaceInfo(key=KEY, dim=DIM)
NAME = "crash"
# hoplite: a compaction every 4 batches, so kills also land inside compactions
# hoplite-worker: every compaction's build in the build worker process, which outlives a kill
WORKER = os.environ.get("CRASH_BUILD_IN_WORKER") == "1"
SETTINGS = IndexSettings(
    compact_after=4 * BATCH, exact_below=0, build_in_worker_mb=0 if WORKER else 64
)


def vectors(n: int) -> np.ndarray:
    return np.random.default_rng(7).normal(size=(n, DIM)).astype(np.float32)


def meta(i: int) -> EntryMeta:
    """Window i: recording ``r<i // 100>`` at ``i % 100`` seconds."""
    return EntryMeta(
        recording_id=f"r{i // 100}", start_s=float(i % 100), end_s=float(i % 100) + 1, tenant="t"
    )


def batches(first: int) -> list[range]:
    """Windows per add: a first add of ``first`` (the bulk load), then BATCHES of BATCH."""
    out = [range(0, first)] if first else []
    return out + [range(first + b * BATCH, first + (b + 1) * BATCH) for b in range(BATCHES)]


def open_index(backend: str, where: str) -> VectorIndex:
    if backend == "hoplite":
        from sevensense.index.hoplite import HopliteIndex

        return HopliteIndex(Path(where), NAME, SETTINGS)
    from sevensense.index.pgvector import PgVectorIndex

    return PgVectorIndex(where, NAME, SETTINGS)


def main() -> None:
    backend, where = sys.argv[1:3]
    start = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    plan = batches(FIRST if backend == "pgvector" else 0)
    vecs = vectors(plan[-1].stop)
    index = open_index(backend, where)
    print("ready", flush=True)
    for number, windows in enumerate(plan):
        if number < start:
            continue
        index.add(INFO, EntryBatch(vecs[windows.start : windows.stop], [meta(i) for i in windows]))
        print(number, flush=True)
        if getattr(index, "compacting", lambda: False)():  # hoplite: on its own thread
            print("compacting", flush=True)
    index.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
