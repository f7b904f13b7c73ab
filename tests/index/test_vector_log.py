"""The hoplite backend's append log, on real BirdNET windows: an add writes its own records
and leaves ``usearch.index`` alone, another handle (another gateway worker) sees it, a
size-triggered compaction folds the log in without changing an answer, and a short or
damaged vector file is refused with its path rather than searched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sevensense.errors import CorruptIndexError
from sevensense.index.hoplite import HopliteIndex
from sevensense.index.hoplite_vectors import read_state
from sevensense.index.records import EntryBatch, Scope, SpaceInfo
from sevensense.index.vector_log import record_size
from sevensense.settings import IndexSettings
from sevensense.storage.atomic import file_signature
from tests.index.conftest import RealWindows
from tests.index.test_backends import V1, assert_same, metas, reference


def _open(root: Path, **overrides: int | bool) -> HopliteIndex:
    return HopliteIndex(root, "log", IndexSettings(**overrides))


def test_adds_append_and_compaction_folds(real_windows: RealWindows, tmp_path: Path) -> None:
    w = real_windows
    info = SpaceInfo(key=V1, dim=w.vectors.shape[1])
    every = metas(w)
    n = len(w.vectors)
    writer = _open(tmp_path)
    reader = _open(tmp_path)  # another process's view: it only reads the files
    space = tmp_path / "log" / V1.slug
    writer.add(info, EntryBatch(w.vectors[:20], every[:20]))
    writer.compact()
    main = file_signature(space / "usearch.index")
    log = space / "vectors.1.log"
    base = log.stat().st_size

    # adds below the threshold: the HNSW file is untouched, the log grows by their records
    writer.add(info, EntryBatch(w.vectors[20:30], every[20:30]))
    assert file_signature(space / "usearch.index") == main
    assert log.stat().st_size == base + 10 * record_size(info.dim)
    everyone = np.ones(n, dtype=bool)
    keep = np.arange(n) < 30
    for q in w.vectors[::7]:
        assert_same(reader.search(V1, q, 10, Scope.everyone())[0], reference(w, q, 10, keep))
    # an idempotent re-add appends nothing
    assert writer.add(info, EntryBatch(w.vectors[:30], every[:30])) == 0
    assert log.stat().st_size == base + 10 * record_size(info.dim)

    # a compaction folds the log into a new usearch.index and starts the next log
    writer.add(info, EntryBatch(w.vectors[30:], every[30:]))
    for q in w.vectors[::7]:
        assert_same(reader.search(V1, q, 10, Scope.everyone())[0], reference(w, q, 10, everyone))
    writer.compact()
    with writer._handle(V1).lock:
        state = read_state(writer._handle(V1).db)
    assert state.generation == 2 and state.entries == 0 and state.index is not None
    assert file_signature(space / "usearch.index") != main
    assert not log.exists() and (space / "vectors.2.log").exists()
    for q in w.vectors[::7]:
        assert_same(reader.search(V1, q, 10, Scope.everyone())[0], reference(w, q, 10, everyone))
    writer.close()
    reader.close()


def test_size_trigger(real_windows: RealWindows, tmp_path: Path) -> None:
    w = real_windows
    info = SpaceInfo(key=V1, dim=w.vectors.shape[1])
    every = metas(w)
    index = _open(tmp_path, compact_after=8, compact_in_background=False)
    for start in range(0, 24, 4):  # six adds of 4: compactions after the 2nd, 4th and 6th
        index.add(info, EntryBatch(w.vectors[start : start + 4], every[start : start + 4]))
    handle = index._handle(V1)
    with handle.lock:
        state = read_state(handle.db)
    assert (state.generation, state.entries) == (3, 0)
    index.close()


def test_adds_during_a_compaction_are_carried_over(
    real_windows: RealWindows, tmp_path: Path
) -> None:
    """A compaction builds from a snapshot while adds go on; the records added meanwhile
    move to the next generation's log at the swap, and nothing is lost or answered twice."""
    w = real_windows
    info = SpaceInfo(key=V1, dim=w.vectors.shape[1])
    every = metas(w)
    n = len(w.vectors)
    index = _open(tmp_path, compact_after=10**6)
    index.add(info, EntryBatch(w.vectors[:20], every[:20]))
    handle = index._handle(V1)
    with handle.lock:
        snap = handle.vectors.snapshot(handle.db)
    temp, mark = handle.vectors.build(snap)  # what the compaction thread does unlocked
    index.add(info, EntryBatch(w.vectors[20:], every[20:]))  # an add meanwhile
    with handle.lock:
        handle.db.execute("BEGIN IMMEDIATE")
        assert handle.vectors.swap(handle.db, snap, temp, mark)
        state = read_state(handle.db)
    assert (state.generation, state.entries) == (1, n - 20)
    reader = _open(tmp_path)  # a fresh process: the file and the carried log
    everyone = np.ones(n, dtype=bool)
    for q in w.vectors[::5]:
        for idx in (index, reader):
            got = idx.search(V1, q, 10, Scope.everyone())[0]
            assert_same(got, reference(w, q, 10, everyone))
            assert len({(g.recording_id, g.start_s) for g in got}) == 10
    # a compaction that lost the race (another one swapped first) changes nothing
    with handle.lock:
        stale = handle.vectors.snapshot(handle.db)
    temp, mark = handle.vectors.build(stale)
    assert index.compact()[V1.slug] > 0
    with handle.lock:
        handle.db.execute("BEGIN IMMEDIATE")
        assert not handle.vectors.swap(handle.db, stale, temp, mark)
    assert not temp.exists()

    # in the background: the add that reaches the threshold returns, the compaction follows
    bg = _open(tmp_path / "bg", compact_after=8)
    for start in range(0, 24, 4):
        bg.add(info, EntryBatch(w.vectors[start : start + 4], every[start : start + 4]))
    bg.wait_compactions()
    bg_handle = bg._handle(V1)
    with bg_handle.lock:
        state = read_state(bg_handle.db)
    assert state.generation >= 1 and state.entries < 24
    keep = np.arange(n) < 24
    for q in w.vectors[:24:3]:
        assert_same(bg.search(V1, q, 10, Scope.everyone())[0], reference(w, q, 10, keep))
    for idx in (index, reader, bg):
        idx.close()


def _filled(w: RealWindows, root: Path) -> tuple[HopliteIndex, SpaceInfo, Path]:
    info = SpaceInfo(key=V1, dim=w.vectors.shape[1])
    every = metas(w)
    index = _open(root)
    index.add(info, EntryBatch(w.vectors[:30], every[:30]))
    index.compact()
    index.add(info, EntryBatch(w.vectors[30:], every[30:]))
    index.close()
    return _open(root), info, root / "log" / V1.slug


@pytest.mark.parametrize(
    "damage", ["truncate-log", "flip-log", "truncate-index", "flip-index", "remove-index"]
)
def test_damaged_files_are_refused(real_windows: RealWindows, tmp_path: Path, damage: str) -> None:
    index, _, space = _filled(real_windows, tmp_path)
    target = space / ("vectors.1.log" if damage.endswith("log") else "usearch.index")
    data = target.read_bytes()
    if damage.startswith("truncate"):
        target.write_bytes(data[: len(data) - 100])
    elif damage.startswith("flip"):
        at = len(data) - 300
        target.write_bytes(data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1 :])
    else:
        target.unlink()
    with pytest.raises(CorruptIndexError) as err:
        index.search(V1, real_windows.vectors[0], 5, Scope.everyone())
    assert str(target) in err.value.message and err.value.details["path"] == str(target)
    assert err.value.http_status == 503 and err.value.code == "index_corrupt"
    index.close()
