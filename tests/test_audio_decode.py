"""Decoding real and synthetic audio to mono float32 blocks, and the typed errors."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from sevensense.audio.decode import iter_mono_blocks, probe
from sevensense.errors import (
    CorruptAudioError,
    EmptyAudioError,
    InvalidSamplesError,
    UnsupportedAudioError,
)
from tests.conftest import audio, tone


def _decode(source, block_frames: int = 65536):  # type: ignore[no-untyped-def]
    blocks = [b for _, b in iter_mono_blocks(source, block_frames)]
    return np.concatenate(blocks)


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3", "ogg", "opus"])
def test_every_codec_of_the_test_clip_decodes_to_the_same_sound(ext: str) -> None:
    ref = _decode(audio("perch_testclip_10s_16k.wav"))
    got = _decode(audio(f"perch_testclip_10s_16k.{ext}"))
    info = probe(audio(f"perch_testclip_10s_16k.{ext}"))
    assert got.dtype == np.float32 and got.ndim == 1
    # Opus always decodes at 48 kHz; the others keep 16 kHz.
    if info.sample_rate == 16000:
        n = min(len(ref), len(got))
        assert abs(len(ref) - len(got)) < 0.05 * 16000
        # Lossy codecs shift/alter samples, so compare energy rather than samples.
        assert np.isclose(np.std(got[:n]), np.std(ref[:n]), rtol=0.1)
    else:
        assert info.sample_rate == 48000
        assert abs(len(got) / 48000 - 10.0) < 0.1


def test_wav_float64_and_flac_24bit_are_lossless_copies() -> None:
    wav = _decode(audio("perch_testclip_10s_16k.wav"))
    flac = _decode(audio("perch_testclip_10s_16k.flac"))
    assert len(wav) == len(flac) == 160000
    assert np.max(np.abs(wav - flac)) < 1e-6


def test_block_size_does_not_change_the_samples() -> None:
    path = audio("soundscape_birdnet_120s_48k.flac")
    assert np.array_equal(_decode(path, 4096), _decode(path, 1 << 20))


@pytest.mark.parametrize(
    "name",
    [
        "labelled/common_yellowthroat.mp3",
        "perch_testclip_10s_16k.mp3",
        "soundscape_birdnet_120s_48k.mp3",
    ],
)
@pytest.mark.parametrize("block", [4096, 65536])
def test_mp3_read_block_by_block_equals_a_whole_file_read(name: str, block: int) -> None:
    """libsndfile 1.2.2 zero-filled ~1,400 samples after some block ends of a mono MP3 when
    soundfile seeked after every read; the decoder reads into its own buffer instead."""
    whole, _ = sf.read(str(audio(name)), dtype="float32", always_2d=True)
    streamed = _decode(audio(name), block)
    assert streamed.shape == (whole.shape[0],)
    assert np.max(np.abs(streamed - whole.mean(axis=1))) < 1e-6  # downmix rounding at most


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_integer_and_float_wav_subtypes(wav_factory, subtype: str) -> None:  # type: ignore[no-untyped-def]
    x = tone(440, 1.0, 8000, amp=0.5)
    got = _decode(wav_factory(x, 8000, f"t_{subtype}.wav", subtype))
    assert np.max(np.abs(got - x)) < 1e-4


def test_multichannel_is_the_mean_of_channels(wav_factory) -> None:  # type: ignore[no-untyped-def]
    x = tone(1000, 0.5, 16000, amp=0.8)
    stereo = np.stack([x, np.zeros_like(x)], axis=1)
    got = _decode(wav_factory(stereo, 16000, "stereo.wav", "FLOAT"))
    assert np.allclose(got, x / 2, atol=1e-6)
    six = np.stack([x * (i + 1) / 6 for i in range(6)], axis=1)
    got6 = _decode(wav_factory(six, 16000, "six.wav", "FLOAT"))
    assert np.allclose(got6, x * 3.5 / 6, atol=1e-6)
    assert probe(wav_factory(six, 16000, "six2.wav", "FLOAT")).channels == 6


def test_bytes_payload_decodes_like_the_file() -> None:
    path = audio("birdnet_sample_3s_48k.wav")
    assert np.array_equal(_decode(path.read_bytes()), _decode(path))


def test_empty_file_and_empty_bytes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(EmptyAudioError, match="empty"):
        _decode(empty)
    with pytest.raises(EmptyAudioError):
        _decode(b"")


def test_zero_length_wav_is_empty_audio(wav_factory) -> None:  # type: ignore[no-untyped-def]
    path = wav_factory(np.zeros(0, dtype=np.float32), 16000, "zero.wav")
    with pytest.raises(EmptyAudioError, match="no samples"):
        _decode(path)


def test_non_audio_bytes_are_rejected_with_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    junk = tmp_path / "notes.wav"
    junk.write_bytes(b"this is a text file, not a recording\n" * 50)
    with pytest.raises((UnsupportedAudioError, CorruptAudioError)) as err:
        _decode(junk)
    assert "notes.wav" in str(err.value)
    with pytest.raises((UnsupportedAudioError, CorruptAudioError)):
        _decode(bytes(range(256)) * 40)


def test_truncated_flac_is_reported_not_crashed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = audio("soundscape_birdnet_120s_48k.flac").read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: len(data) // 3])
    try:
        got = _decode(cut)
    except CorruptAudioError as exc:
        assert "cut.flac" in str(exc)
    else:
        # libsndfile may stop cleanly at the cut: then we must get the first third, not more.
        assert 0 < len(got) / 48000 < 60


def test_truncated_header_is_corrupt(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = audio("birdnet_sample_3s_48k.wav").read_bytes()
    cut = tmp_path / "header.wav"
    cut.write_bytes(data[:20])
    with pytest.raises((CorruptAudioError, UnsupportedAudioError)):
        _decode(cut)


def test_nan_samples_are_a_typed_error_with_position(wav_factory) -> None:  # type: ignore[no-untyped-def]
    x = tone(440, 2.0, 16000)
    x[24000] = np.nan
    path = wav_factory(x, 16000, "nan.wav", "FLOAT")
    with pytest.raises(InvalidSamplesError, match=r"1\.500 s"):
        _decode(path)
    x[24000] = np.inf
    with pytest.raises(InvalidSamplesError):
        _decode(wav_factory(x, 16000, "inf.wav", "FLOAT"))


def test_missing_file_is_an_audio_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CorruptAudioError, match="no such file"):
        _decode(tmp_path / "absent.flac")


def test_real_multichannel_real_rates_probe() -> None:
    info = probe(audio("labelled/tuxpaint/heron_greatblue_flying.ogg"))
    assert info.sample_rate == 22050
    assert sf.info(str(audio("labelled/common_yellowthroat.mp3"))).samplerate == 44100
