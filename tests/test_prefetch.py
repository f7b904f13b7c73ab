"""Decoding ahead of inference: order, errors, early exit, the bound, and equal results."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sevensense.audio.pipeline import StreamStats
from sevensense.errors import CorruptAudioError
from sevensense.inference.engine import EmbeddingEngine
from sevensense.inference.prefetch import prefetched
from sevensense.inference.recordings import embed_recordings
from tests.conftest import audio


def test_items_arrive_in_order_from_another_thread() -> None:
    seen: set[str] = set()

    def numbers() -> Iterator[int]:
        for i in range(100):
            seen.add(threading.current_thread().name)
            yield i

    assert list(prefetched(numbers(), 4)) == list(range(100))
    assert seen == {"sevensense-prefetch"}


def test_depth_zero_stays_in_the_calling_thread() -> None:
    names = [threading.current_thread().name for _ in prefetched(range(3), 0)]
    assert names == [threading.current_thread().name] * 3


def test_an_error_arrives_after_the_items_before_it() -> None:
    def broken() -> Iterator[int]:
        yield 1
        yield 2
        raise CorruptAudioError("truncated")

    got: list[int] = []
    with pytest.raises(CorruptAudioError, match="truncated"):
        for item in prefetched(broken(), 8):
            got.append(item)
    assert got == [1, 2]


def test_the_producer_runs_at_most_depth_ahead() -> None:
    produced: list[int] = []

    def counting() -> Iterator[int]:
        for i in range(1000):
            produced.append(i)
            yield i

    stream = prefetched(counting(), 3)
    assert next(stream) == 0
    time.sleep(0.3)  # ample time for an unbounded producer to run far ahead
    # One taken, three queued, one more held by the blocked put.
    assert len(produced) <= 1 + 3 + 1
    stream.close()


def test_leaving_early_stops_the_producer_and_closes_the_source() -> None:
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    before = threading.active_count()
    stream = prefetched(endless(), 2)
    assert [next(stream) for _ in range(5)] == [0, 1, 2, 3, 4]
    stream.close()
    assert closed.wait(2.0)
    assert threading.active_count() == before


def test_prefetch_changes_no_result(engine: EmbeddingEngine, tmp_path: Path) -> None:
    # Two real recordings and a truncated one between them: the same windows, embeddings,
    # scores and per-recording reports with the queue as without it.
    good = audio("soundscape_birdnet_120s_48k.flac")
    data = good.read_bytes()
    broken = tmp_path / "truncated.flac"
    broken.write_bytes(data[: len(data) // 3])
    sources = [audio("labelled/common_yellowthroat.mp3"), broken, good]
    runs = []
    for depth in (0, 16):
        engine.settings.inference.prefetch_windows = depth
        try:
            got: list[object] = []
            summary = embed_recordings(engine, sources, got.append)
        finally:
            engine.settings.inference.prefetch_windows = 16
        runs.append((got, summary))
    (plain, plain_summary), (ahead, ahead_summary) = runs
    assert [r.status for r in ahead_summary.recordings] == [
        r.status for r in plain_summary.recordings
    ]
    assert ahead_summary.recordings[1].status in {"partial", "failed"}
    assert [r.windows for r in ahead_summary.recordings] == [
        r.windows for r in plain_summary.recordings
    ]
    assert len(ahead) == len(plain) > 40
    for a, b in zip(ahead, plain, strict=True):
        assert (a.source, a.index) == (b.source, b.index)  # type: ignore[attr-defined]
        np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-5)  # type: ignore[attr-defined]
        assert a.top_k[0][0] == b.top_k[0][0]  # type: ignore[attr-defined]


def test_embed_file_fills_stats_with_prefetch(engine: EmbeddingEngine) -> None:
    stats = StreamStats()
    results = list(engine.embed_file(audio("soundscape_birdnet_120s_48k.flac"), stats=stats))
    assert engine.settings.inference.prefetch_windows > 0
    assert stats.windows == len(results) and stats.duration_s == pytest.approx(120.0, abs=0.1)
