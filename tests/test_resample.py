"""Resampling with soxr: exact lengths, frequency preservation, streaming == one-shot."""

from __future__ import annotations

import numpy as np
import pytest

from sevensense.audio.resample import (
    QUALITY_PRESETS,
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
