"""A compaction writes its new ``usearch.index`` in synced chunks (issue 24), so that an
add's fsync never waits behind more than one chunk of it; on real BirdNET windows: the file
is the one usearch would have written, read back by the index's own reader, and written in
as many synced chunks as its size calls for."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
from usearch.index import Index

from sevensense.errors import CorruptIndexError
from sevensense.index import hoplite_vectors
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
    monkeypatch.setattr(hoplite_vectors, "SYNC_CHUNK_BYTES", chunk)
    w = real_windows
    info = SpaceInfo(key=V1, dim=w.vectors.shape[1])
    n = len(w.vectors)
    index = HopliteIndex(tmp_path, "sync", IndexSettings(compact_after=10**6))
    index.add(info, EntryBatch(w.vectors, metas(w)))
    with caplog.at_level(logging.DEBUG, logger=hoplite_vectors.__name__):
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


def test_a_corrupt_old_file_stops_the_compaction_with_its_path(
    real_windows: RealWindows, tmp_path: Path
) -> None:
    """A file that went bad after the snapshot checked it: typed, with its path (usearch
    raises a bare ValueError), and nothing replaced."""
    w = real_windows
    info = SpaceInfo(key=V1, dim=w.vectors.shape[1])
    index = HopliteIndex(tmp_path, "corrupt", IndexSettings(compact_after=10**6))
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
