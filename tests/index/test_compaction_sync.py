"""A compaction writes its new ``usearch.index`` in synced chunks (issue 24), so that an
add's fsync never waits behind more than one chunk of it; on real BirdNET windows: the file
is the one usearch would have written, read back by the index's own reader, and written in
as many synced chunks as its size calls for."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import pytest
from usearch.index import Index

from sevensense.errors import CorruptIndexError
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


def test_a_large_build_runs_in_a_child_process(
    real_windows: RealWindows,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """usearch holds the GIL while it loads and saves: past BUILD_IN_CHILD_BYTES the build
    is another interpreter's, and the result is the same index."""
    monkeypatch.setattr(hoplite_build, "BUILD_IN_CHILD_BYTES", 0)
    w = real_windows
    info = SpaceInfo(key=V1, dim=w.vectors.shape[1])
    n = len(w.vectors)
    index = HopliteIndex(tmp_path, "child", IndexSettings(compact_after=10**6))
    half = n // 2
    index.add(info, EntryBatch(w.vectors[:half], metas(w)[:half]))
    with caplog.at_level(logging.DEBUG, logger=hoplite_build.__name__):
        index.compact()  # a first file, from nothing
        index.add(info, EntryBatch(w.vectors[half:], metas(w)[half:]))
        index.compact()  # the old file loaded and extended, in the child
    built = [r for r in caplog.records if r.getMessage().startswith("compaction built")]
    assert len(built) == 2
    assert all(r.args is not None and r.args[1] != os.getpid() for r in built)
    directory = tmp_path / "child" / V1.slug
    assert not list(directory.glob(".*.tmp*"))  # the job's files are gone
    with index._handle(V1).lock:
        state = read_state(index._handle(V1).db)
    assert state.index == file_mark(directory / UINDEX_FILENAME) and state.entries == 0
    everyone = np.ones(n, dtype=bool)
    for q in w.vectors[::7]:
        assert_same(index.search(V1, q, 10, Scope.everyone())[0], reference(w, q, 10, everyone))
    index.close()


def test_a_corrupt_old_file_is_reported_from_the_child(
    real_windows: RealWindows, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hoplite_build, "BUILD_IN_CHILD_BYTES", 0)
    w = real_windows
    info = SpaceInfo(key=V1, dim=w.vectors.shape[1])
    old = tmp_path / "usearch.index"
    old.write_bytes(b"\0" * 64)  # not an index
    spec = hoplite_build.BuildSpec(
        old=str(old),
        temp=str(tmp_path / ".usearch.index.1.tmp"),
        dim=info.dim,
        metric="IP",
        connectivity=16,
        expansion_add=128,
        expansion_search=64,
    )
    keys = np.arange(4, dtype=np.uint64)
    with pytest.raises(CorruptIndexError) as caught:  # typed, with its path, as in process
        hoplite_build.build(spec, keys, keys, w.vectors[:4].astype(np.float16))
    assert caught.value.details["path"] == str(old) and str(old) in caught.value.message
    assert not (tmp_path / ".usearch.index.1.tmp.job").exists()
