"""A compaction's new HNSW file, built in a child interpreter when it is large.

usearch 2.26's Python bindings hold the GIL for the whole of ``Index.restore`` and
``Index.save``: 0.1-0.4 s each at 100k x 1024-d, seconds at 1M (measured in
docs/index-at-scale.md, "The GIL during a compaction"). In an entry task every request and
stream would stall that long at each compaction, so a large build runs in a child process
whose GIL is its own (``python -m sevensense.index.hoplite_build JOB_DIR``). A small one stays
in process, where the child's start (about 0.3 s of imports) would cost more than it saves.
The child dies with the thread that started it (``PR_SET_PDEATHSIG``), so a killed
compaction leaves at most a temp file, which the next one removes.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np

# onnxruntime is imported before usearch (see sevensense.index.hoplite).
import onnxruntime  # noqa: F401
from pydantic import BaseModel, ConfigDict
from usearch.compiled import MetricKind, ScalarKind
from usearch.index import Index

from sevensense.errors import CorruptIndexError, VectorIndexError
from sevensense.index.vector_log import SYNC_CHUNK_BYTES, write_synced

# Above this many bytes of old file plus folded vectors, the build runs in a child process.
BUILD_IN_CHILD_BYTES = 64 << 20
_CORRUPT_EXIT = 3
log = logging.getLogger(__name__)


class FileMark(BaseModel):
    """What a committed state says of an HNSW file, to recognise it after a crash."""

    model_config = ConfigDict(extra="forbid")

    size: int
    crc32: int


class BuildSpec(BaseModel):
    """Everything but the arrays a build needs: the old file, the new one, the graph's shape."""

    model_config = ConfigDict(extra="forbid")

    old: str | None
    temp: str
    dim: int
    metric: str
    connectivity: int
    expansion_add: int
    expansion_search: int


def build_file(
    spec: BuildSpec, live: np.ndarray, keys: np.ndarray, vectors: np.ndarray
) -> FileMark:
    """The old file without dropped or re-added keys, plus the folded records, written in
    synced chunks (:func:`write_synced`) and fsync'd; its mark."""
    if spec.old is not None:
        try:
            index = Index.restore(spec.old, view=False)
        except (RuntimeError, ValueError) as exc:
            message = f"unreadable vector file {spec.old}: {exc}"
            raise CorruptIndexError(message, path=spec.old) from exc
        if index is None:
            raise CorruptIndexError(f"unreadable vector file {spec.old}", path=spec.old)
    else:
        index = Index(
            ndim=spec.dim,
            metric=MetricKind.__members__[spec.metric],
            dtype=ScalarKind.F16,
            connectivity=spec.connectivity,
            expansion_add=spec.expansion_add,
            expansion_search=spec.expansion_search,
        )
    index.expansion_add = spec.expansion_add  # type: ignore[misc]
    have = np.asarray(index.keys, dtype=np.uint64) if len(index) else np.zeros(0, np.uint64)
    drop = have[~np.isin(have, live) | np.isin(have, keys)]
    if len(drop):
        index.remove(drop)
    fold = np.isin(keys, live)
    if fold.any():
        index.add(keys[fold], vectors[fold], threads=0)
    data = index.save()  # a bytearray: the file's bytes, the same as save(path) writes
    del index
    assert data is not None
    syncs = write_synced(Path(spec.temp), data, SYNC_CHUNK_BYTES)
    log.debug("compaction wrote %s: %d bytes, %d synced chunks", spec.temp, len(data), syncs)
    return FileMark(size=len(data), crc32=zlib.crc32(data))


def build(spec: BuildSpec, live: np.ndarray, keys: np.ndarray, vectors: np.ndarray) -> FileMark:
    """:func:`build_file`, in a child process when the work is large."""
    old_bytes = os.path.getsize(spec.old) if spec.old is not None else 0
    if old_bytes + vectors.nbytes < BUILD_IN_CHILD_BYTES:
        return build_file(spec, live, keys, vectors)
    job = Path(f"{spec.temp}.job")
    job.mkdir(exist_ok=True)
    try:
        (job / "spec.json").write_text(spec.model_dump_json())
        np.savez(job / "arrays.npz", live=live, keys=keys, vectors=vectors)
        proc = subprocess.run(
            [sys.executable, "-m", "sevensense.index.hoplite_build", str(job)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode == _CORRUPT_EXIT:
            raise CorruptIndexError(proc.stderr.strip().splitlines()[-1], path=spec.old)
        if proc.returncode != 0:
            raise VectorIndexError(
                f"compaction build of {spec.temp} failed (exit {proc.returncode}): "
                f"{proc.stderr.strip()[-2000:]}"
            )
        answer = json.loads(proc.stdout.strip().splitlines()[-1])
        log.debug("compaction built %s in child process %d", spec.temp, answer["pid"])
        return FileMark.model_validate(answer["mark"])
    finally:
        for part in job.glob("*"):
            part.unlink(missing_ok=True)
        job.rmdir()


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def main() -> None:
    _die_with_parent()
    job = Path(sys.argv[1])
    spec = BuildSpec.model_validate_json((job / "spec.json").read_text())
    with np.load(job / "arrays.npz") as arrays:
        live, keys, vectors = arrays["live"], arrays["keys"], arrays["vectors"]
    try:
        mark = build_file(spec, live, keys, vectors)
    except CorruptIndexError as exc:
        print(exc, file=sys.stderr)
        sys.exit(_CORRUPT_EXIT)
    print(json.dumps({"mark": mark.model_dump(), "pid": os.getpid()}))


if __name__ == "__main__":
    main()
