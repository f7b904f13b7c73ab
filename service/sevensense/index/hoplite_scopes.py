"""Filtered search on a hoplite space without asking SQLite about every window per query.

A filter (tenant, site, time range, recording prefix) is a property of a window's recording,
and a space has few recordings per window (one an hour per sensor: hundreds of windows each).
So a process keeps, per space, every window's id and recording id in memory (16 bytes a
window: 16 MB at 1M), loaded once and extended by the ids added since (ids only grow:
``AUTOINCREMENT``). A query asks SQLite only for the recordings that pass, over the small
``recordings`` table with the same SQL as before (LIKE, text times), and turns them into a
mask over the windows with one lookup.

Scopes small enough to search exactly (``index.exact_below``) keep their unit vectors as one
contiguous float32 block, so a repeated scope (a tenant's site, a dashboard's time range)
costs a matrix-vector product instead of gathering thousands of vectors from the memory map
per query; blocks are extended by windows added since, and evicted least recently used past
``index.scope_cache_mb``. Windows deleted by this process are forgotten at once; by another
one, when a search finds a candidate without its row (the caller checks the best ones).
"""

from __future__ import annotations

import itertools
import sqlite3
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from sevensense.index.ranking import unit

Gather = Callable[[np.ndarray], np.ndarray]


class WindowTable:
    """Window ids (ascending) and their recording ids; ``alive`` is False once deleted."""

    def __init__(self) -> None:
        self.ids = np.zeros(0, np.uint64)
        self.recordings = np.zeros(0, np.int64)
        self.alive = np.zeros(0, bool)
        self.version = 0  # bumped on every forget: cached blocks drop the dead then

    def refresh(self, db: sqlite3.Connection) -> None:
        last = int(self.ids[-1]) if len(self.ids) else -1
        rows = db.execute(
            "SELECT id, recording_id FROM windows WHERE id > ? ORDER BY id", (last,)
        ).fetchall()
        if not rows:
            return
        flat = np.fromiter(itertools.chain.from_iterable(rows), np.int64, 2 * len(rows))
        pairs = flat.reshape(-1, 2)
        self.ids = np.concatenate([self.ids, pairs[:, 0].astype(np.uint64)])
        self.recordings = np.concatenate([self.recordings, pairs[:, 1]])
        self.alive = np.concatenate([self.alive, np.ones(len(pairs), bool)])

    def forget(self, ids: np.ndarray) -> None:
        pos = self.find(ids)
        pos = pos[pos >= 0]
        if len(pos):
            self.alive[pos] = False
            self.version += 1

    def find(self, ids: np.ndarray) -> np.ndarray:
        """Positions of ``ids``, -1 for ids not here."""
        ids = np.asarray(ids, dtype=np.uint64)
        if not len(self.ids):
            return np.full(len(ids), -1, np.int64)
        at = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        return np.where(self.ids[at] == ids, at, -1).astype(np.int64)

    def mask(self, recordings: np.ndarray, start: int = 0) -> np.ndarray:
        """Which windows (from position ``start``) belong to ``recordings`` and are alive."""
        recs = self.recordings[start:]
        if not len(recordings) or not len(recs):
            return np.zeros(len(recs), bool)
        lut = np.zeros(int(max(recordings.max(), recs.max())) + 1, bool)
        lut[recordings] = True
        return lut[recs] & self.alive[start:]


class _Block:
    """A scope's windows (ascending ids) and their unit vectors, as of ``upto`` windows, in
    chunks: the first holds the windows the block was made with, each later one an eighth of
    the block (``MIN_CHUNK`` to ``CHUNK`` rows), so windows added since cost their own rows.
    One contiguous array had to be copied whole at every extension: 35-150 ms per search for
    a 50-MB block on this host while streams were adding (docs/index-at-scale.md)."""

    CHUNK = 4096
    MIN_CHUNK = 64

    def __init__(self, keys: np.ndarray, vectors: np.ndarray, upto: int, version: int) -> None:
        self.upto = upto
        self.version = version
        self._keys: list[np.ndarray] = []
        self._vectors: list[np.ndarray] = []
        self._fill: list[int] = []
        self.dim = vectors.shape[1]
        self.extend(keys, vectors, upto)

    def parts(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [
            (k[:n], v[:n]) for k, v, n in zip(self._keys, self._vectors, self._fill, strict=True)
        ]

    def extend(self, keys: np.ndarray, vectors: np.ndarray, upto: int) -> None:
        done = 0
        while done < len(keys):
            if not self._fill or self._fill[-1] == len(self._keys[-1]):
                spare = min(self.CHUNK, max(self.MIN_CHUNK, sum(self._fill) // 8))
                room = len(keys) - done if not self._fill else spare
                self._keys.append(np.empty(room, np.uint64))
                self._vectors.append(np.empty((room, self.dim), np.float32))
                self._fill.append(0)
            at = self._fill[-1]
            take = min(len(self._keys[-1]) - at, len(keys) - done)
            self._keys[-1][at : at + take] = keys[done : done + take]
            self._vectors[-1][at : at + take] = vectors[done : done + take]
            self._fill[-1] = at + take
            done += take
        self.upto = upto

    def without(self, alive: Callable[[np.ndarray], np.ndarray], version: int) -> _Block:
        """The block less windows no longer alive (``alive``: a mask over keys)."""
        parts = self.parts()
        keys = np.concatenate([k for k, _ in parts]) if parts else np.zeros(0, np.uint64)
        vectors = (
            np.concatenate([v for _, v in parts]) if parts else np.zeros((0, self.dim), np.float32)
        )
        keep = alive(keys)
        return _Block(keys[keep], vectors[keep], self.upto, version)

    @property
    def nbytes(self) -> int:
        return sum(int(k.nbytes + v.nbytes) for k, v in zip(self._keys, self._vectors, strict=True))


class _Mask:
    """A filter's windows as of ``upto`` windows and table ``version``."""

    def __init__(self, mask: np.ndarray, count: int, version: int) -> None:
        self.mask = mask
        self.count = count
        self.version = version


class ScopeCache:
    """Per filter: its window mask (the last :data:`MASKS` filters) and, for exact scopes,
    its block of vectors (least recently used first out past ``max_bytes``)."""

    MASKS = 16

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._blocks: OrderedDict[tuple[Any, ...], _Block] = OrderedDict()
        self._masks: OrderedDict[tuple[Any, ...], _Mask] = OrderedDict()
        self._bytes = 0

    def mask(
        self, key: tuple[Any, ...], table: WindowTable, recordings: Callable[[], np.ndarray]
    ) -> tuple[np.ndarray, int]:
        """(mask over the table's windows, how many pass); ``recordings`` (the filter's
        recording ids, from SQLite) is asked only for windows not seen before."""
        known = self._masks.pop(key, None)
        n = len(table.ids)
        if known is None or known.version != table.version:
            mask = table.mask(recordings())
            known = _Mask(mask, int(mask.sum()), table.version)
        elif len(known.mask) < n:
            new = table.mask(recordings(), len(known.mask))
            known = _Mask(
                np.concatenate([known.mask, new]), known.count + int(new.sum()), table.version
            )
        self._masks[key] = known
        while len(self._masks) > self.MASKS:
            self._masks.popitem(last=False)
        return known.mask, known.count

    def block(
        self, key: tuple[Any, ...], table: WindowTable, mask: np.ndarray, gather: Gather
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(keys, unit float32 vectors) of the scope's live windows, in parts; ``mask`` is the
        scope's current one (:meth:`mask`)."""
        block = self._blocks.pop(key, None)
        if block is not None:
            self._bytes -= block.nbytes
            if block.version != table.version:  # drop windows deleted since
                block = block.without(lambda keys: table.alive[table.find(keys)], table.version)
            n = len(table.ids)
            if block.upto < n:  # windows added since
                keys = table.ids[block.upto + np.flatnonzero(mask[block.upto :])]
                block.extend(keys, unit(gather(keys)), n)
        else:
            keys = table.ids[mask]
            block = _Block(keys, unit(gather(keys)), len(table.ids), table.version)
        if block.nbytes <= self.max_bytes:
            self._blocks[key] = block
            self._bytes += block.nbytes
            while self._bytes > self.max_bytes:
                _, old = self._blocks.popitem(last=False)
                self._bytes -= old.nbytes
        return block.parts()

    def clear(self) -> None:
        self._blocks.clear()
        self._masks.clear()
        self._bytes = 0


def top(
    q: np.ndarray, parts: list[tuple[np.ndarray, np.ndarray]], count: int
) -> list[tuple[int, float]]:
    """The ``count`` best (key, cosine) of a block's parts, best first (ties: lower key).
    einsum, not BLAS: one thread, whose latency holds on a busy host, where OpenBLAS's threads
    measured p99s of 20-60 ms for a 20,000 × 256 product (einsum: 10-13 ms, p50 1.5-1.8 ms)."""
    u = unit(q)
    found_keys, found_cos = [], []
    for keys, vectors in parts:
        if not len(keys):
            continue
        cos = np.einsum("ij,j->i", vectors, u)
        take = min(count, len(cos))
        best = np.argpartition(-cos, take - 1)[:take] if take < len(cos) else np.arange(len(cos))
        found_keys.append(keys[best])
        found_cos.append(cos[best])
    if not found_keys:
        return []
    keys, cos = np.concatenate(found_keys), np.concatenate(found_cos)
    best = np.lexsort((keys, -cos))[:count]
    return [(int(keys[b]), float(cos[b])) for b in best]
