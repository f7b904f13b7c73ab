"""A compaction writes its new ``usearch.index`` in synced chunks (issue 24), so that an
add's fsync never waits behind more than one chunk of it; on real BirdNET windows: the file
is the one usearch would have written, read back by the index's own reader, and written in
as many synced chunks as its size calls for."""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
from usearch.index import Index

from sevensense.errors import CorruptIndexError, VectorIndexError
from sevensense.index import hoplite_build
from sevensense.index.hoplite import HopliteIndex
from sevensense.index.hoplite_vectors import UINDEX_FILENAME, file_mark, read_state
from sevensense.index.records import EntryBatch, Scope, SpaceInfo
from sevensense.index.vector_log import write_synced
from sevensense.settings import IndexSettings
from tests.index.conftest import RealWindows
from tests.index.test_backends import V1, assert_same, metas, reference


def test_write_synced_counts_its_chunks(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 256, (1 << 20) + 1, dtype=np.uint8).tobytes()
    path = tmp_path / "f"
    assert write_synced(path, data, 1 << 18) == 5  # 4 full chunks and 1 byte
    assert path.read_bytes() == data
    assert write_synced(path, data, len(data)) == 1  # replaces, not appends
    assert path.read_bytes() == data
    assert write_synced(path, b"", 1 << 18) == 0 and path.read_bytes() == b""


def test_compaction_writes_in_synced_chunks(
    real_windows: RealWindows,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    chunk = 16 << 10  # small, so that a test-sized file takes several chunks
    monkeypatch.setattr(hoplite_build, "SYNC_CHUNK_BYTES", chunk)
    w = real_windows
    info = SpaceInfo(key=V1, dim=w.vectors.shape[1])
    n = len(w.vectors)
    index = HopliteIndex(tmp_path, "sync", IndexSettings(compact_after=10**6))
    index.add(info, EntryBatch(w.vectors, metas(w)))
    with caplog.at_level(logging.DEBUG, logger=hoplite_build.__name__):
        index.compact()
    index.close()

    path = tmp_path / "sync" / V1.slug / UINDEX_FILENAME
    size = path.stat().st_size
    assert size > 3 * chunk
    wrote = [r for r in caplog.records if r.getMessage().startswith("compaction wrote")]
    assert len(wrote) == 1
    assert wrote[0].args is not None and wrote[0].args[1:] == (size, math.ceil(size / chunk))
    restored = Index.restore(str(path), view=True)
    assert restored is not None and len(restored) == n
    assert bytes(restored.save() or b"") == path.read_bytes()  # what save(path) writes

    reader = HopliteIndex(tmp_path, "sync", IndexSettings())  # a fresh process's reader
    handle = reader._handle(V1)
    with handle.lock:
        state = read_state(handle.db)
    assert state.index == file_mark(path) and state.entries == 0
    everyone = np.ones(n, dtype=bool)
    for q in w.vectors[::7]:
        assert_same(reader.search(V1, q, 10, Scope.everyone())[0], reference(w, q, 10, everyone))
    got = handle.vectors.get(np.asarray(handle.vectors.main.keys, dtype=np.uint64)[:5])
    assert got.shape == (5, info.dim) and np.isfinite(got).all()
    reader.close()


@pytest.mark.parametrize("worker_mb", [64, 0], ids=["in-process", "worker"])
def test_a_corrupt_old_file_stops_the_compaction_with_its_path(
    real_windows: RealWindows, tmp_path: Path, worker_mb: int
) -> None:
    """A file that went bad after the snapshot checked it: typed, with its path (usearch
    raises a bare ValueError), and nothing replaced; the same from the worker process."""
    w = real_windows
    info = SpaceInfo(key=V1, dim=w.vectors.shape[1])
    settings = IndexSettings(compact_after=10**6, build_in_worker_mb=worker_mb)
    index = HopliteIndex(tmp_path, "corrupt", settings)
    index.add(info, EntryBatch(w.vectors[:8], metas(w)[:8]))
    index.compact()
    index.add(info, EntryBatch(w.vectors[8:16], metas(w)[8:16]))
    handle = index._handle(V1)
    with handle.lock:
        snap = handle.vectors.snapshot(handle.db)
    path = tmp_path / "corrupt" / V1.slug / UINDEX_FILENAME
    path.write_bytes(b"\0" * 64)
    with pytest.raises(CorruptIndexError) as caught:
        handle.vectors.build(snap)
    assert caught.value.details["path"] == str(path) and str(path) in caught.value.message
    assert path.read_bytes() == b"\0" * 64
    index.close()


def test_a_large_build_runs_in_the_worker_process(
    real_windows: RealWindows, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """usearch holds the GIL while it loads and saves: past ``index.build_in_worker_mb`` the
    build is the worker's (another interpreter, started once), and the index is the same."""
    w = real_windows
    info = SpaceInfo(key=V1, dim=w.vectors.shape[1])
    n = len(w.vectors)
    index = HopliteIndex(
        tmp_path, "worker", IndexSettings(compact_after=10**6, build_in_worker_mb=0)
    )
    third = n // 3
    with caplog.at_level(logging.DEBUG, logger=hoplite_build.__name__):
        index.add(info, EntryBatch(w.vectors[:third], metas(w)[:third]))
        index.compact()  # a first file, from nothing
        index.add(info, EntryBatch(w.vectors[third : 2 * third], metas(w)[third : 2 * third]))
        index.compact()  # the old file loaded and extended
        worker = hoplite_build.WORKER._proc
        assert worker is not None
        os.kill(worker.pid, signal.SIGKILL)  # a dead worker is replaced at the next build
        worker.wait()
        index.add(info, EntryBatch(w.vectors[2 * third :], metas(w)[2 * third :]))
        index.compact()
    pids = [r.args[1] for r in caplog.records if r.getMessage().startswith("compaction built")]  # type: ignore[index]
    assert len(pids) == 3 and os.getpid() not in pids
    assert pids[0] == pids[1] == worker.pid != pids[2]  # one worker for many builds
    directory = tmp_path / "worker" / V1.slug
    assert not list(directory.glob(".*.tmp*"))  # the job's files are gone
    with index._handle(V1).lock:
        state = read_state(index._handle(V1).db)
    assert state.index == file_mark(directory / UINDEX_FILENAME) and state.entries == 0
    everyone = np.ones(n, dtype=bool)
    for q in w.vectors[::7]:
        assert_same(index.search(V1, q, 10, Scope.everyone())[0], reference(w, q, 10, everyone))
    index.close()


def test_a_worker_that_dies_during_a_build_is_a_typed_error(tmp_path: Path) -> None:
    """The build worker killed mid-job: the compaction fails with a typed error naming it
    (the next add past the threshold tries again, with a new worker)."""
    worker = hoplite_build.BuildWorker()
    spec = hoplite_build.BuildSpec(
        old=None,
        temp=str(tmp_path / ".usearch.index.1.tmp"),
        dim=8,
        metric="IP",
        connectivity=16,
        expansion_add=128,
        expansion_search=64,
    )
    keys = np.arange(4, dtype=np.uint64)
    vectors = np.ones((4, 8), np.float32)
    assert worker.build(spec, keys, keys, vectors).size > 0
    proc = worker._proc
    assert proc is not None
    os.kill(proc.pid, signal.SIGSTOP)  # the next job waits; then the worker dies under it
    threading.Timer(0.5, lambda: os.kill(proc.pid, signal.SIGKILL)).start()
    with pytest.raises(VectorIndexError, match=f"worker {proc.pid} exited"):
        worker.build(spec, keys, keys, vectors)
    assert not (tmp_path / ".usearch.index.1.tmp.job").exists()
    assert worker.build(spec, keys, keys, vectors).size > 0  # a new worker
    assert worker._proc is not None and worker._proc.pid != proc.pid
    worker.close()
