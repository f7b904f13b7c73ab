"""Resampling: soxr (exact lengths, frequency preservation, streaming == one-shot) and
BirdNET-Analyzer's resampy kaiser_fast (bit-identical to the one-shot call)."""

from __future__ import annotations

import numpy as np
import pytest

from sevensense.audio.kaiser_fast import FILE_SPLITTING_S, KaiserFastStream
from sevensense.audio.quality_levels import BIRDNET_ANALYZER, QUALITY_PRESETS
from sevensense.audio.resample import (
    StreamResampler,
    output_length,
    resample,
    resample_blocks,
)
from tests.conftest import tone

RATE_PAIRS = [(16000, 32000), (16000, 48000), (44100, 48000), (48000, 32000), (22050, 32000)]


@pytest.mark.parametrize(("src", "dst"), RATE_PAIRS)
@pytest.mark.parametrize("n", [1, 999, 160_000, 441_001])
def test_output_length_is_exact(src: int, dst: int, n: int) -> None:
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    out = np.concatenate(list(resample_blocks(iter(np.array_split(x, 7)), src, dst)))
    assert len(out) == output_length(n, src, dst) == round(n * dst / src)


@pytest.mark.parametrize(("src", "dst"), RATE_PAIRS)
def test_streaming_equals_one_shot(src: int, dst: int) -> None:
    x = np.random.default_rng(1).standard_normal(src * 3).astype(np.float32)
    blocks = [x[i : i + 12_345] for i in range(0, len(x), 12_345)]
    streamed = np.concatenate(list(resample_blocks(blocks, src, dst)))
    assert np.array_equal(streamed, resample(x, src, dst))


@pytest.mark.parametrize("dst", [32000, 48000])
@pytest.mark.parametrize("freq", [440.0, 3000.0, 7000.0])
def test_pure_tone_keeps_its_frequency(dst: int, freq: float) -> None:
    x = tone(freq, 2.0, 16000)
    y = resample(x, 16000, dst)
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    peak_hz = np.argmax(spectrum) * dst / len(y)
    assert abs(peak_hz - freq) <= dst / len(y), f"{freq} Hz came out at {peak_hz:.1f} Hz"
    # No energy may appear above the source's Nyquist frequency (8 kHz) beyond filter leakage.
    above = spectrum[int(8200 * len(y) / dst) :].sum() / spectrum.sum()
    assert above < 1e-3


def test_quality_levels_map_to_soxr_presets_and_differ() -> None:
    assert QUALITY_PRESETS == {"linear": "QQ", "medium": "MQ", "high": "HQ", "audiophile": "VHQ"}
    x = np.random.default_rng(2).standard_normal(48000).astype(np.float32)
    outs = {q: resample(x, 48000, 32000, q) for q in QUALITY_PRESETS}
    assert len({len(v) for v in outs.values()}) == 1
    assert not np.array_equal(outs["linear"], outs["high"])
    with pytest.raises(ValueError, match="unknown resample quality"):
        resample(x, 48000, 32000, "ultra")


def test_same_rate_is_passthrough() -> None:
    stream = StreamResampler(32000, 32000)
    x = np.arange(10, dtype=np.float32)
    assert stream.process(x) is x
    assert stream.flush().size == 0


# --- BirdNET-Analyzer's resampling (resampy kaiser_fast, as librosa.load runs it) ---------


def _librosa_kaiser_fast(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    """What ``librosa.load(sr=dst, res_type="kaiser_fast")`` gives: resampy's output,
    zero-padded to ``ceil(n * ratio)`` (librosa's ``fix_length``)."""
    import resampy

    y = resampy.resample(x, src, dst, filter="kaiser_fast", axis=-1)
    n = int(np.ceil(x.shape[-1] * float(dst) / src))
    return np.pad(y, (0, max(0, n - y.shape[0])))[:n]


@pytest.mark.parametrize("src", [8_000, 22_050, 32_000, 44_100, 96_000])
@pytest.mark.parametrize("block", [997, 65_536])
def test_kaiser_fast_stream_is_bit_identical_to_one_shot(src: int, block: int) -> None:
    x = np.random.default_rng(src).standard_normal(src * 3 + 17).astype(np.float32)
    stream = StreamResampler(src, 48_000, BIRDNET_ANALYZER)
    parts = [stream.process(x[i : i + block]) for i in range(0, x.shape[0], block)]
    got = np.concatenate([*parts, stream.flush()])
    expected = _librosa_kaiser_fast(x, src, 48_000)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_kaiser_fast_restarts_at_birdnet_analyzers_pieces() -> None:
    # BirdNET-Analyzer loads (and resamples) a long file 600 s at a time.
    x = np.random.default_rng(3).standard_normal(32_000 * 25).astype(np.float32)
    stream = KaiserFastStream(32_000, 48_000, piece_frames=32_000 * 10)
    got = np.concatenate(
        [*(stream.process(x[i : i + 5000]) for i in range(0, len(x), 5000)), stream.flush()]
    )
    pieces = [x[i : i + 320_000] for i in range(0, len(x), 320_000)]
    expected = np.concatenate([_librosa_kaiser_fast(p, 32_000, 48_000) for p in pieces])
    np.testing.assert_array_equal(got, expected)
    assert KaiserFastStream(32_000, 48_000).piece_frames == FILE_SPLITTING_S * 32_000


def test_kaiser_fast_memory_is_bounded() -> None:
    stream = KaiserFastStream(44_100, 48_000)
    block = np.ones(4096, dtype=np.float32)
    for _ in range(500):  # 46 s of audio
        stream.process(block)
        assert stream._buf.shape[0] <= block.shape[0] + 4 * stream._kernel.reach  # type: ignore[union-attr]


def test_unknown_resampler_is_refused() -> None:
    with pytest.raises(ValueError, match="kaiser_fast"):
        StreamResampler(32_000, 48_000, "sinc_best")
