"""Every Perch 2.0 code path of the engine, exercised with the Perch-contract test model."""

from __future__ import annotations

import numpy as np
import pytest

from sevensense.artifacts.manifest import OutputRole
from sevensense.audio.pipeline import StreamStats, prepare_windows
from sevensense.errors import (
    CorruptAudioError,
    EmptyAudioError,
    InvalidSamplesError,
    ModelNotFoundError,
    UnsupportedAudioError,
)
from sevensense.inference.engine import EmbeddingEngine, EmbedOptions
from tests.conftest import audio, cosine, make_settings, tone

SOUNDSCAPE = "soundscape_birdnet_120s_48k.flac"


def test_outputs_are_bound_by_name_with_perch_shapes(perch_engine: EmbeddingEngine) -> None:
    model = perch_engine.model()
    assert model.input_name == "inputs"
    assert model.output_names[OutputRole.LOGITS] == "label"
    assert model.provider == "CPUExecutionProvider"
    batch = np.zeros((3, 160_000), np.float32)
    out = perch_engine.run_batch(model, batch, list(OutputRole))
    assert out[OutputRole.EMBEDDING].shape == (3, 1536)
    assert out[OutputRole.SPATIAL_EMBEDDING].shape == (3, 16, 4, 1536)
    assert out[OutputRole.SPECTROGRAM].shape == (3, 500, 128)
    assert out[OutputRole.LOGITS].shape == (3, 14795)
    assert model.labels is not None and len(model.labels) == 14795


def test_windows_are_perch_normalised_5s_at_the_right_times(perch_engine: EmbeddingEngine) -> None:
    model = perch_engine.model()
    config = perch_engine.preprocess_config(model)
    assert (config.sample_rate, config.window_samples, config.overlap) == (32000, 160_000, 0.5)
    stats = StreamStats()
    ws = list(prepare_windows(audio("perch_testclip_10s_16k.wav"), config, stats))
    assert [(w.start_s, w.end_s) for w in ws] == [(0.0, 5.0), (2.5, 7.5), (5.0, 10.0)]
    for w in ws:
        assert w.samples.shape == (160_000,)
        assert abs(float(w.samples.mean())) < 1e-6
        assert np.isclose(np.abs(w.samples).max(), 0.25, atol=1e-6)
    assert stats.info is not None and stats.info.sample_rate == 16000


def test_embeddings_are_unit_norm_with_metadata(perch_engine: EmbeddingEngine) -> None:
    results = list(
        perch_engine.embed_file(audio("perch_testclip_10s_16k.flac"), options=EmbedOptions(top_k=3))
    )
    assert len(results) == 3
    for r in results:
        assert r.embedding.shape == (1536,) and r.embedding.dtype == np.float32
        assert abs(np.linalg.norm(r.embedding) - 1.0) < 1e-5
        assert r.quality.is_valid and not r.quality.flags()
        assert r.meta.model.name == "perch-contract" and r.meta.provider == "CPUExecutionProvider"
        assert len(r.top_k) == 3 and r.top_k[0][1] >= r.top_k[1][1] >= r.top_k[2][1]
        assert all(0.0 < s < 1.0 for _, s in r.top_k)
    assert [r.meta.batch_index for r in results] == [0, 1, 2]


@pytest.mark.parametrize(
    ("padding", "starts", "skipped"),
    [
        ("discard", [0.0, 2.5, 5.0], [(7.5, 11.0, "trailing_partial")]),
        ("zero_pad", [0.0, 2.5, 5.0, 7.5], []),
        ("overlap_fill", [0.0, 2.5, 5.0, 6.0], []),
    ],
)
def test_trailing_window_policy(
    perch_engine: EmbeddingEngine, wav_factory, padding: str, starts: list[float], skipped: list
) -> None:  # type: ignore[no-untyped-def]
    path = wav_factory(tone(1500, 11.0, 32000), 32000, "eleven.wav")
    stats = StreamStats()
    results = list(
        perch_engine.embed_file(path, options=EmbedOptions(padding=padding), stats=stats)  # type: ignore[arg-type]
    )
    assert [r.start_s for r in results] == starts
    assert [(s.start_s, s.end_s, s.reason) for s in stats.skipped] == skipped
    if padding == "zero_pad":
        assert results[-1].end_s == 11.0 and results[-1].padded_samples == 32000 * 3 / 2


def test_short_clip_is_padded_to_one_window(perch_engine: EmbeddingEngine) -> None:
    # tuxpaint's owl (1.23 s) is far shorter than 5 s.
    for padding in ("discard", "zero_pad"):
        (r,) = perch_engine.embed_file(
            audio("labelled/tuxpaint/owl.ogg"),
            options=EmbedOptions(padding=padding),  # type: ignore[arg-type]
        )
        assert r.start_s == 0.0 and 0.0 < r.end_s < 5.0
        assert r.padded_samples == 160_000 - round(r.end_s * 32000)
        assert r.quality.is_valid


def test_spectrogram_and_logits_on_request(perch_engine: EmbeddingEngine) -> None:
    opts = EmbedOptions(include_spectrogram=True, include_logits=True)
    r = next(
        perch_engine.embed_file(audio("labelled/opensoundscape_birds_10s_32k.wav"), options=opts)
    )
    assert r.spectrogram is not None and r.spectrogram.shape == (500, 128)
    assert r.logits is not None and r.logits.shape == (14795,)
    plain = next(perch_engine.embed_file(audio("labelled/opensoundscape_birds_10s_32k.wav")))
    assert plain.spectrogram is None and plain.logits is None


def test_batch_size_and_neighbours_do_not_change_results(perch_artifact) -> None:  # type: ignore[no-untyped-def]
    path = audio(SOUNDSCAPE)
    ref = {}
    for size in (1, 3, 8):
        eng = EmbeddingEngine(
            make_settings(inference__model="perch-contract", inference__max_batch_size=size)
        )
        for r in eng.embed_file(path):
            if r.index in ref:
                assert np.max(np.abs(r.embedding - ref[r.index])) <= 1e-5, f"batch {size}"
            else:
                ref[r.index] = r.embedding
    assert len(ref) == 47


def test_silence_gives_one_consistent_finite_embedding(
    perch_engine: EmbeddingEngine, wav_factory
) -> None:  # type: ignore[no-untyped-def]
    path = wav_factory(np.zeros(32000 * 12, np.float32), 32000, "silence.wav")
    results = list(perch_engine.embed_file(path, options=EmbedOptions(energy_threshold=0.0)))
    assert len(results) == 4
    embs = np.stack([r.embedding for r in results])
    assert np.isfinite(embs).all()
    assert np.max(np.abs(embs - embs[0])) == 0.0
    again = next(perch_engine.embed_file(path, options=EmbedOptions(energy_threshold=0.0)))
    assert np.array_equal(again.embedding, embs[0])
    # With the default energy gate the same windows are skipped and reported instead.
    stats = StreamStats()
    assert list(perch_engine.embed_file(path, stats=stats)) == []
    assert [s.reason for s in stats.skipped] == ["silent"] * 4


def test_duplicate_audio_in_other_containers_is_near_identical(
    perch_engine: EmbeddingEngine,
) -> None:
    wav = [r.embedding for r in perch_engine.embed_file(audio("perch_testclip_10s_16k.wav"))]
    flac = [r.embedding for r in perch_engine.embed_file(audio("perch_testclip_10s_16k.flac"))]
    assert min(cosine(a, b) for a, b in zip(wav, flac, strict=True)) > 0.99


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"", EmptyAudioError),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", (CorruptAudioError, UnsupportedAudioError)),
        (b"%PDF-1.7 definitely not audio" * 100, (CorruptAudioError, UnsupportedAudioError)),
    ],
)
def test_bad_payloads_are_typed_errors(
    perch_engine: EmbeddingEngine, payload: bytes, error
) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error) as err:
        list(perch_engine.embed_file(payload))
    assert err.value.code and err.value.message


def test_nan_audio_is_refused(perch_engine: EmbeddingEngine, wav_factory) -> None:  # type: ignore[no-untyped-def]
    x = np.full(32000 * 6, np.nan, np.float32)
    with pytest.raises(InvalidSamplesError):
        list(perch_engine.embed_file(wav_factory(x, 32000, "nan.wav", "FLOAT")))


def test_unknown_model(perch_engine: EmbeddingEngine) -> None:
    with pytest.raises(ModelNotFoundError):
        perch_engine.model("wren-v0")
