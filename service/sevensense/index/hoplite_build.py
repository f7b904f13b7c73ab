"""A compaction's new HNSW file, built by a long-lived worker process when it is large.

usearch 2.26's Python bindings hold the GIL for the whole of ``Index.restore`` and
``Index.save``: 0.1-0.4 s each at 100k x 1024-d, seconds at 1M (docs/index-at-scale.md,
"The GIL during a compaction"). In an entry task every request and stream would stall that
long at each compaction, so a large build runs in another interpreter whose GIL is its own:
one worker per process (``python -m sevensense.index.hoplite_build``), started at the first
large build and kept, fed one job at a time over its stdin (a JSON line naming the arrays'
files) and answering on its stdout (a JSON line). One at a time also bounds memory: a build
holds a whole index. The worker exits when its stdin closes (this process ended, however it
ended); a build it was doing leaves a temporary file that the next compaction removes.

A child per compaction (``subprocess.run``) was tried first and hung the in-process ingest
benchmark twice (docs/index-at-scale.md); a small build stays in process, where the
worker's start (about 0.3 s of imports) would cost more than the stall it saves.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import zlib
from pathlib import Path
from typing import IO, Any

import numpy as np

# onnxruntime is imported before usearch (see sevensense.index.hoplite).
import onnxruntime  # noqa: F401
from pydantic import BaseModel, ConfigDict
from usearch.compiled import MetricKind, ScalarKind
from usearch.index import Index

from sevensense.errors import CorruptIndexError, VectorIndexError
from sevensense.index.vector_log import SYNC_CHUNK_BYTES, write_synced

log = logging.getLogger(__name__)
ARRAYS = ("live", "keys", "vectors")
# The worker's CPU priority below the serving process's: a build uses every core for
# seconds, and searches and requests should not queue behind it.
WORKER_NICE = 10


class FileMark(BaseModel):
    """Size and CRC32 of an HNSW file as written by a compaction."""

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


class BuildReply(BaseModel):
    """The worker's answer: the new file's mark, or why there is none."""

    model_config = ConfigDict(extra="forbid")

    mark: FileMark | None = None
    corrupt: str | None = None
    error: str | None = None
    pid: int


def build_file(
    spec: BuildSpec, live: np.ndarray, keys: np.ndarray, vectors: np.ndarray
) -> FileMark:
    """The old file without dropped or re-added keys, plus the folded records, serialised to
    memory and written in synced chunks (:func:`write_synced`: an add's fsync of its log
    waits behind at most ``SYNC_CHUNK_BYTES`` of it); its mark.

    Checked on usearch 2.26, the alternatives do not bound the dirty data: ``save(path,
    progress=...)`` calls back only while it writes the graph, after the vectors (about 93%
    of a 1024-d file), and ``save(path)`` holds the GIL for the whole write. The cost is a
    transient copy of the file in memory (about 2 GB at 1M x 1024-d); the index is dropped
    before the copy is written."""
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


class BuildWorker:
    """This process's build worker: started on first use, restarted if it died, and never
    shared with a forked child (which starts its own)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner = 0

    def build(
        self, spec: BuildSpec, live: np.ndarray, keys: np.ndarray, vectors: np.ndarray
    ) -> FileMark:
        job = Path(f"{spec.temp}.job")
        job.mkdir(exist_ok=True)
        try:
            for name, array in zip(ARRAYS, (live, keys, vectors), strict=True):
                np.save(job / f"{name}.npy", array, allow_pickle=False)
            request = json.dumps({"spec": spec.model_dump(), "job": str(job)}) + "\n"
            with self._lock:
                answer = self._ask(request.encode())
        finally:
            shutil.rmtree(job, ignore_errors=True)
        reply = BuildReply.model_validate_json(answer)
        if reply.corrupt is not None:
            raise CorruptIndexError(reply.corrupt, path=spec.old)
        if reply.mark is None:
            raise VectorIndexError(f"compaction build of {spec.temp} failed: {reply.error}")
        log.debug("compaction built %s in worker process %d", spec.temp, reply.pid)
        return reply.mark

    def _ask(self, request: bytes) -> bytes:
        proc = self._running()
        stdin, stdout = _pipes(proc)
        try:
            stdin.write(request)
            stdin.flush()
            answer = stdout.readline()  # blocks without the GIL
        except OSError:
            answer = b""
        if not answer:
            code = proc.wait()
            self._proc = None
            raise VectorIndexError(f"compaction build worker {proc.pid} exited ({code})")
        return answer

    def _running(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._owner == os.getpid() and self._proc.poll() is None:
            return self._proc
        self._proc = subprocess.Popen(
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        self._owner = os.getpid()
        log.info("compaction build worker started: pid %d", self._proc.pid)
        return self._proc

    def close(self) -> None:
        """Closing its stdin ends the worker after the build it is doing."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None and self._owner == os.getpid():
            _pipes(proc)[0].close()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _pipes(proc: subprocess.Popen[bytes]) -> tuple[IO[bytes], IO[bytes]]:
    assert proc.stdin is not None and proc.stdout is not None
    return proc.stdin, proc.stdout


WORKER = BuildWorker()


def build(
    spec: BuildSpec,
    live: np.ndarray,
    keys: np.ndarray,
    vectors: np.ndarray,
    in_worker_bytes: int,
) -> FileMark:
    """:func:`build_file`, by the worker process when the old file plus the folded vectors
    reach ``in_worker_bytes``."""
    old_bytes = os.path.getsize(spec.old) if spec.old is not None else 0
    if old_bytes + vectors.nbytes < in_worker_bytes:
        return build_file(spec, live, keys, vectors)
    return WORKER.build(spec, live, keys, vectors)


def _serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    os.nice(WORKER_NICE)
    for line in requests:
        ask: dict[str, Any] = json.loads(line)
        spec = BuildSpec.model_validate(ask["spec"])
        job = Path(ask["job"])
        reply = BuildReply(pid=os.getpid())
        try:
            arrays = [np.load(job / f"{name}.npy", allow_pickle=False) for name in ARRAYS]
            reply.mark = build_file(spec, *arrays)
        except CorruptIndexError as exc:
            reply.corrupt = exc.message
        except Exception as exc:  # the parent raises it; the worker serves the next job
            reply.error = f"{type(exc).__name__}: {exc}"
        try:
            replies.write(reply.model_dump_json().encode() + b"\n")
            replies.flush()
        except BrokenPipeError:  # the parent is gone: nobody waits for this build
            return


if __name__ == "__main__":
    # replies on a private copy of stdout; anything a library prints goes to stderr
    _replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    _serve(sys.stdin.buffer, _replies)
    os._exit(0)  # not through a flush of the closed pipe again
