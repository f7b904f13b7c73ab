"""Live PCM frames give the same model windows as the same audio read as a file."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from sevensense.audio.encoding import SampleEncoding
from sevensense.audio.live import (
    RESAMPLER_LOOKBACK_S,
    LiveWindows,
    PcmDecoder,
    PcmFormat,
    resume_point,
)
from sevensense.audio.normalize import NormalizationSpec
from sevensense.audio.pipeline import PreprocessConfig, prepare_windows
from sevensense.audio.windowing import Padding, Window
from sevensense.errors import InvalidSamplesError
from tests.conftest import audio

CLIP = audio("perch_clap_21s_16k.wav")  # 16 kHz int16: resampled to 32 kHz


def _config(overlap: float = 0.5) -> PreprocessConfig:
    return PreprocessConfig(
        sample_rate=32000,
        window_samples=160000,
        overlap=overlap,
        padding=Padding.ZERO_PAD,
        normalization=NormalizationSpec.perch(),
    )


def _frames(data: bytes, sizes: list[int]) -> list[bytes]:
    out, at, i = [], 0, 0
    while at < len(data):
        n = sizes[i % len(sizes)]
        out.append(data[at : at + n])
        at += n
        i += 1
    return out


def _live(frames: list[bytes], fmt: PcmFormat, config: PreprocessConfig) -> list[Window]:
    decoder = PcmDecoder(fmt)
    live = LiveWindows(fmt.sample_rate, config)
    windows: list[Window] = []
    for frame in frames:
        kept, _ = live.push(decoder.decode(frame))
        windows.extend(kept)
    kept, _ = live.finish()
    return windows + kept


@pytest.mark.parametrize("seed", [0, 1])
def test_random_frame_sizes_give_the_file_windows_exactly(seed: int) -> None:
    pcm, rate = sf.read(CLIP, dtype="int16")
    data = pcm.astype("<i2").tobytes()
    rng = np.random.default_rng(seed)
    sizes = [int(s) for s in rng.integers(1, 9000, size=500)]  # odd sizes split samples
    fmt = PcmFormat(rate, 1, SampleEncoding.S16LE)
    config = _config()
    live = _live(_frames(data, sizes), fmt, config)
    files = list(prepare_windows(CLIP, config))
    assert [w.start_sample for w in live] == [w.start_sample for w in files]
    assert [w.valid_samples for w in live] == [w.valid_samples for w in files]
    for a, b in zip(live, files, strict=True):
        np.testing.assert_allclose(a.samples, b.samples, atol=1e-6)


def test_stereo_float_frames_are_averaged_like_the_file_decoder() -> None:
    mono, rate = sf.read(CLIP, dtype="float32")
    left, right = mono, np.roll(mono, 1000) * np.float32(0.5)
    data = np.stack([left, right], axis=1).astype("<f4").tobytes()
    decoder = PcmDecoder(PcmFormat(rate, 2, SampleEncoding.F32LE))
    out = np.concatenate([decoder.decode(f) for f in _frames(data, [4097, 333])])
    np.testing.assert_array_equal(out, np.stack([left, right], 1).mean(axis=1, dtype=np.float32))
    assert decoder.frames == mono.shape[0] and decoder.pending_bytes == 0


def test_a_nan_sample_is_refused_with_its_position() -> None:
    x = np.zeros(16000, dtype="<f4")
    x[12345] = np.nan
    decoder = PcmDecoder(PcmFormat(16000, 1, SampleEncoding.F32LE))
    decoder.decode(x[:8000].tobytes())
    with pytest.raises(InvalidSamplesError) as caught:
        decoder.decode(x[8000:].tobytes())
    assert caught.value.details["sample_index"] == 12345


def test_memory_holds_one_window_whatever_the_length() -> None:
    config = _config(overlap=0.0)
    live = LiveWindows(32000, config)
    block = np.full(3200, 0.1, dtype=np.float32)
    count = 0
    for _ in range(20 * 60 * 10):  # 20 minutes in 100-ms blocks
        kept, _ = live.push(block)
        count += len(kept)
        assert live._windower.buf.shape[0] <= config.window_samples + block.shape[0]
    assert count == 240 and live.model_samples == 20 * 60 * 32000


@pytest.mark.parametrize(
    ("quality", "overlap", "padding", "atol"),
    [
        ("high", 0.5, Padding.ZERO_PAD, 1e-6),  # soxr restarted: float32 rounding only
        ("audiophile", 0.0, Padding.OVERLAP_FILL, 0.0),  # soxr VHQ computes in double
        ("kaiser_fast", 0.5, Padding.ZERO_PAD, 1e-6),
    ],
)
def test_a_stream_rebuilt_at_a_resume_point_gives_the_windows_after_it(
    quality: str, overlap: float, padding: Padding, atol: float
) -> None:
    """What a resume on another entry task relies on: the audio from ``resume_point``
    alone gives every window from that point as the uninterrupted stream does."""
    mono, rate = sf.read(CLIP, dtype="float32")
    config = PreprocessConfig(
        sample_rate=32000,
        window_samples=160000,
        overlap=overlap,
        padding=padding,
        resample_quality=quality,
        normalization=NormalizationSpec.perch(),
    )
    whole = LiveWindows(rate, config)
    kept, _ = whole.push(mono)
    tail, _ = whole.finish()
    reference = kept + tail
    for next_index in (1, 3):
        point = resume_point(rate, config, next_index)
        keep_in = point.keep_from * rate // config.sample_rate  # the client resends from
        assert keep_in - RESAMPLER_LOOKBACK_S * rate - 1 <= point.input_offset <= keep_in
        live = LiveWindows.resumed(rate, config, point)
        got: list[Window] = []
        for at in range(point.input_offset, len(mono), 7919):  # odd block sizes
            got += live.push(mono[at : at + 7919])[0]
        got += live.finish()[0]
        want = [w for w in reference if w.index >= next_index]
        assert [(w.index, w.start_sample, w.valid_samples) for w in got] == [
            (w.index, w.start_sample, w.valid_samples) for w in want
        ]
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a.samples, b.samples, rtol=0, atol=atol)


def test_a_windower_fed_from_before_its_resume_point_skips_to_it() -> None:
    """verify=true rebuilt on another task: the primary and the verifier windowers restart
    at different points and share one feed from the earlier; each gives exactly what it
    gives fed from its own point."""
    mono, rate = sf.read(CLIP, dtype="float32")
    config = _config()
    point = resume_point(rate, config, 3)
    fed_from = point.input_offset - 12345

    def run(live: LiveWindows, start: int) -> list[Window]:
        got: list[Window] = []
        for at in range(start, len(mono), 7919):
            got += live.push(mono[at : at + 7919])[0]
        return got + live.finish()[0]

    own = run(LiveWindows.resumed(rate, config, point), point.input_offset)
    shared = run(LiveWindows.resumed(rate, config, point, fed_from), fed_from)
    assert [w.index for w in shared] == [w.index for w in own] and own[0].index == 3
    for a, b in zip(shared, own, strict=True):
        np.testing.assert_array_equal(a.samples, b.samples)
    with pytest.raises(ValueError, match="after the resume point"):
        LiveWindows.resumed(rate, config, point, point.input_offset + 1)
