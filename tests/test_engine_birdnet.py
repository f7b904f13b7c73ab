"""BirdNET v2.4 through the whole engine, on real recordings."""

from __future__ import annotations

import numpy as np
import pytest

from sevensense.inference.engine import EmbeddingEngine, EmbedOptions
from tests.conftest import audio, cosine, make_settings

SOUNDSCAPE = "soundscape_birdnet_120s_48k"


def _embs(engine: EmbeddingEngine, name: str, **opts: object) -> np.ndarray:
    results = list(engine.embed_file(audio(name), options=EmbedOptions(**opts)))  # type: ignore[arg-type]
    return np.stack([r.embedding for r in results])


def test_default_model_is_birdnet_on_cpu(engine: EmbeddingEngine) -> None:
    model = engine.model()
    assert str(model.identity) == "birdnet-v2.4:2.4.0:base"
    assert model.provider == "CPUExecutionProvider"
    assert model.requested[0] in {"CUDAExecutionProvider", "CPUExecutionProvider"}
    assert model.manifest.embedding_dim == 1024 and len(model.labels or []) == 6522


def test_common_yellowthroat_is_top1(engine: EmbeddingEngine) -> None:
    # 44.1 kHz MP3, 5.9 s: resampled to 48 kHz, two 3-s windows (the second zero-padded).
    results = list(engine.embed_file(audio("labelled/common_yellowthroat.mp3")))
    assert len(results) == 2
    best = max(results, key=lambda r: r.top_k[0][1])
    assert best.top_k[0][0] == "Geothlypis trichas", [r.top_k[:3] for r in results]
    assert best.top_k[0][1] > 0.5


def test_codecs_of_the_same_soundscape_give_close_embeddings(engine: EmbeddingEngine) -> None:
    flac = _embs(engine, f"{SOUNDSCAPE}.flac", energy_threshold=0.0)
    for codec in ("ogg", "mp3"):
        other = _embs(engine, f"{SOUNDSCAPE}.{codec}", energy_threshold=0.0)
        assert other.shape == flac.shape == (40, 1024)
        sims = flac @ other.T
        same = np.diag(sims)
        # Measured (BirdNET, and identically with the original TFLite in LiteRT): same window
        # across codecs OGG min 0.936 / median 0.974, MP3 min 0.904 / median 0.958; different
        # windows of this soundscape max 0.875 / median 0.69. The bounds sit between the two
        # populations, and every lossy window's nearest FLAC window must be its own.
        assert same.min() > 0.88, f"{codec}: min same-window cosine {same.min():.4f}"
        assert np.median(same) > 0.94, f"{codec}: median {np.median(same):.4f}"
        assert (sims.argmax(axis=1) == np.arange(40)).all(), codec
    off_diagonal = flac @ flac.T
    np.fill_diagonal(off_diagonal, np.nan)
    assert np.nanmedian(off_diagonal) < 0.8


def test_batch_size_and_neighbours_do_not_change_embeddings(birdnet_artifact) -> None:  # type: ignore[no-untyped-def]
    ref: dict[int, np.ndarray] = {}
    for size in (1, 5, 8):
        eng = EmbeddingEngine(make_settings(inference__max_batch_size=size))
        for r in eng.embed_file(audio(f"{SOUNDSCAPE}.flac")):
            if r.index in ref:
                diff = np.max(np.abs(r.embedding - ref[r.index]))
                assert diff <= 1e-5, f"window {r.index} batch {size}: {diff}"
            else:
                ref[r.index] = r.embedding
    assert len(ref) == 40


def test_duplicate_audio_is_near_identical_and_silence_is_consistent(
    engine: EmbeddingEngine,
    wav_factory,  # type: ignore[no-untyped-def]
) -> None:
    a = _embs(engine, "birdnet_sample_3s_48k.wav")
    import soundfile as sf

    x, sr = sf.read(audio("birdnet_sample_3s_48k.wav"), dtype="float32")
    b = _embs_path(engine, wav_factory(x, sr, "copy.flac"))
    assert cosine(a[0], b[0]) > 0.99
    silence = wav_factory(np.zeros(48000 * 9, np.float32), 48000, "silence.wav")
    results = list(engine.embed_file(silence, options=EmbedOptions(energy_threshold=0.0)))
    embs = np.stack([r.embedding for r in results])
    assert embs.shape == (3, 1024) and np.isfinite(embs).all()
    assert np.max(np.abs(embs - embs[0])) == 0.0
    assert all(abs(np.linalg.norm(e) - 1) < 1e-5 for e in embs)


def _embs_path(engine: EmbeddingEngine, path) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.stack([r.embedding for r in engine.embed_file(path)])


@pytest.mark.parametrize(
    "name", ["perch_testclip_10s_16k.opus", "labelled/tuxpaint/heron_greatblue_flying.ogg"]
)
def test_other_rates_and_codecs_embed_validly(engine: EmbeddingEngine, name: str) -> None:
    results = list(engine.embed_file(audio(name)))
    assert results and all(r.quality.is_valid for r in results)
