"""The embedding cache: exact hits return what the model said, near-duplicates are found
across codecs of the same recording and not across different windows, memory is bounded."""

from __future__ import annotations

import numpy as np
import pytest

from sevensense.audio.pipeline import prepare_windows
from sevensense.inference.engine import EmbeddingEngine
from sevensense.serving.model_paths.embedding_cache import EmbeddingCache, fingerprint
from tests.conftest import audio

REF = "birdnet-v2.4:2.4.0:base"
RATE = 48_000


@pytest.fixture(scope="module")
def soundscape(engine: EmbeddingEngine) -> dict[str, list[np.ndarray]]:
    """The same 120-s soundscape as FLAC, MP3 and OGG, windowed as BirdNET sees it."""
    config = engine.preprocess_config(engine.model(REF))
    return {
        codec: [
            w.samples
            for w in prepare_windows(audio(f"soundscape_birdnet_120s_48k.{codec}"), config)
        ]
        for codec in ("flac", "mp3", "ogg")
    }


def test_exact_hit_returns_the_stored_answer(soundscape: dict[str, list[np.ndarray]]) -> None:
    cache = EmbeddingCache(100)
    window = soundscape["flac"][3]
    emb = np.arange(1024, dtype=np.float32)
    logits = np.linspace(-5, 5, 6522, dtype=np.float32)
    cache.put(REF, window, RATE, emb, logits)
    hit = cache.get(REF, window.copy(), RATE)
    assert hit is not None and hit.exact and hit.similarity == 1.0
    assert np.array_equal(hit.embedding, emb)
    assert hit.logits is not None and np.array_equal(hit.logits, logits)
    assert cache.get("birdnet-v2.4:2.5.0:base", window, RATE) is None  # other version
    nudged = window.copy()
    nudged[0] += 1e-6
    assert cache.get(REF, nudged, RATE) is None  # exact means exact without a threshold


def test_near_duplicates_match_the_same_window_in_another_codec(
    soundscape: dict[str, list[np.ndarray]],
) -> None:
    cache = EmbeddingCache(100, similarity=0.95)
    for i, window in enumerate(soundscape["flac"]):
        cache.put(REF, window, RATE, np.full(4, i, dtype=np.float32), None)
    for codec in ("mp3", "ogg"):
        found = [cache.get(REF, w, RATE) for w in soundscape[codec]]
        assert all(h is not None and not h.exact for h in found)
        indices = [int(h.embedding[0]) for h in found if h is not None]
        assert indices == list(range(len(soundscape["flac"])))  # each finds its own window
        assert min(h.similarity for h in found if h is not None) >= 0.95


def test_different_audio_is_not_a_near_duplicate(soundscape: dict[str, list[np.ndarray]]) -> None:
    flac = soundscape["flac"]
    prints = np.stack([fingerprint(w, RATE) for w in flac])
    cross = prints @ prints.T
    np.fill_diagonal(cross, -1.0)
    assert cross.max() < 0.8  # measured 0.52: far below the 0.95 one would configure
    cache = EmbeddingCache(100, similarity=0.95)
    for w in flac[:20]:
        cache.put(REF, w, RATE, np.ones(4, dtype=np.float32), None)
    assert all(cache.get(REF, w, RATE) is None for w in flac[20:])


def test_bounded_least_recently_used(soundscape: dict[str, list[np.ndarray]]) -> None:
    cache = EmbeddingCache(5, similarity=0.95)
    flac = soundscape["flac"]
    for i, w in enumerate(flac[:5]):
        cache.put(REF, w, RATE, np.full(4, i, dtype=np.float32), None)
    assert cache.get(REF, flac[0], RATE) is not None  # touch 0: 1 is now the oldest
    for i, w in enumerate(flac[5:8], start=5):
        cache.put(REF, w, RATE, np.full(4, i, dtype=np.float32), None)
    assert len(cache) == 5
    kept = [i for i in range(8) if cache.get(REF, flac[i], RATE) is not None]
    assert kept == [0, 4, 5, 6, 7]
    hit = cache.get(REF, soundscape["mp3"][2], RATE)  # evicted slots are not searched
    assert hit is None or int(hit.embedding[0]) != 2


def test_disabled_cache_stores_nothing(soundscape: dict[str, list[np.ndarray]]) -> None:
    cache = EmbeddingCache(0)
    cache.put(REF, soundscape["flac"][0], RATE, np.ones(4, dtype=np.float32), None)
    assert len(cache) == 0 and cache.get(REF, soundscape["flac"][0], RATE) is None
