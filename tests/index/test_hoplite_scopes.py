"""Filtered search on hoplite with its in-memory window table and cached scope blocks: answers
stay exact when windows are added after a scope was cached, when another process (its own
handle) deletes windows the cache still holds, and with no cache at all; a scope larger than
``exact_below`` goes through the HNSW with the same answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sevensense.index.hoplite import HopliteIndex
from sevensense.index.hoplite_scopes import _Block, top
from sevensense.index.ranking import unit
from sevensense.index.records import EntryBatch, Scope, SearchFilter, SpaceInfo
from sevensense.settings import IndexSettings
from tests.index.conftest import RealWindows
from tests.index.test_backends import V1, assert_same, keep_mask, metas, reference


def _split(w: RealWindows) -> tuple[np.ndarray, np.ndarray]:
    """Tenant a's windows: the first half added before the scope is cached, the rest after."""
    ours = np.flatnonzero(keep_mask(w, lambda r, t, s, m: t == "a"))
    rest = np.setdiff1d(np.arange(len(w.vectors)), ours[len(ours) // 2 :])
    return rest, ours[len(ours) // 2 :]


def _add(index: HopliteIndex, info: SpaceInfo, w: RealWindows, rows: np.ndarray) -> None:
    meta = metas(w)
    index.add(info, EntryBatch(w.vectors[rows], [meta[i] for i in rows]))


def test_cached_scope_follows_adds_and_other_processes_deletes(
    tmp_path: Path, real_windows: RealWindows
) -> None:
    w = real_windows
    info = SpaceInfo(key=V1, dim=w.vectors.shape[1])
    index = HopliteIndex(tmp_path, "scopes", IndexSettings())
    first, later = _split(w)
    _add(index, info, w, first)
    q = w.vectors[later[0]]
    added = np.zeros(len(w.vectors), bool)
    added[first] = True

    def check(scope: Scope, flt: SearchFilter, predicate, k: int = 10) -> None:  # type: ignore[no-untyped-def]
        got = index.search(info.key, q, k, scope, flt)[0]
        assert_same(got, reference(w, q, k, keep_mask(w, predicate) & added))

    tenant_a = (Scope.of("a"), SearchFilter(), lambda r, t, s, m: t == "a")
    check(*tenant_a)  # cached now, without the later half
    _add(index, info, w, later)
    added[later] = True
    check(*tenant_a)  # the later windows are found: the block was extended
    assert index.search(info.key, q, 1, *tenant_a[:2])[0][0].score > 0.99

    # another process deletes the recording holding the best answers: this one's cache still
    # holds their vectors; its answers must not include them, and still count k
    other = HopliteIndex(tmp_path, "scopes", IndexSettings())
    best = index.search(info.key, q, 1, *tenant_a[:2])[0][0].recording_id
    assert other.delete_recording(best, Scope.everyone()) > 0
    other.close()
    gone = keep_mask(w, lambda r, t, s, m: r == best)
    added &= ~gone
    got = index.search(info.key, q, 10, *tenant_a[:2])[0]
    assert all(n.recording_id != best for n in got)
    check(*tenant_a)
    site = (Scope.everyone(), SearchFilter(site="south"), lambda r, t, s, m: s == "south")
    check(*site)
    index.close()


def test_without_cache_and_through_the_graph(tmp_path: Path, real_windows: RealWindows) -> None:
    w = real_windows
    info = SpaceInfo(key=V1, dim=w.vectors.shape[1])
    everything = np.ones(len(w.vectors), bool)
    cases = [
        (Scope.of("b"), SearchFilter(), lambda r, t, s, m: t == "b"),
        (Scope.of("a"), SearchFilter(site="south"), lambda r, t, s, m: t == "a" and s == "south"),
        (
            Scope.everyone(),
            SearchFilter(recording_prefix="site7/"),
            lambda r, t, s, m: r[:6] == "site7/",
        ),
    ]
    for n, settings in enumerate((IndexSettings(scope_cache_mb=0), IndexSettings(exact_below=10))):
        index = HopliteIndex(tmp_path, f"s{n}", settings)
        _add(index, info, w, np.arange(len(w.vectors)))
        for q in w.vectors[::17]:
            for scope, flt, predicate in cases:
                got = index.search(info.key, q, 10, scope, flt)[0]
                assert_same(got, reference(w, q, 10, keep_mask(w, predicate) & everything))
        index.close()


def test_a_block_grows_by_chunks_without_copying_what_it_holds() -> None:
    """Windows added to a cached scope cost their own rows: the block's first chunk is never
    copied again, memory stays within an eighth (or one small chunk) of the rows held, and
    the ranking over the parts is the ranking over all the rows."""
    rng = np.random.default_rng(7)
    dim = 16
    keys = np.arange(1000, dtype=np.uint64)
    vectors = rng.standard_normal((1000, dim)).astype(np.float32)
    block = _Block(keys[:300], vectors[:300], 300, 0)
    first = block.parts()[0][1].base
    at = 300
    for step in (1, 50, 7, 200, 142, 300):
        block.extend(keys[at : at + step], vectors[at : at + step], at + step)
        at += step
    parts = block.parts()
    assert parts[0][1].base is first  # the first 300 rows were not copied
    assert np.array_equal(np.concatenate([k for k, _ in parts]), keys)
    assert np.array_equal(np.concatenate([v for _, v in parts]), vectors)
    row = 8 + 4 * dim
    assert block.nbytes <= 1000 * row + max(1000 // 8, _Block.MIN_CHUNK) * row
    q = rng.standard_normal(dim).astype(np.float32)
    cos = unit(vectors) @ unit(q)
    expected = np.lexsort((keys, -cos))[:10]
    got = top(q, [(k, unit(v)) for k, v in parts], 10)
    assert [k for k, _ in got] == keys[expected].tolist()
    assert np.allclose([c for _, c in got], cos[expected], atol=1e-6)
    assert top(q, [], 10) == []
