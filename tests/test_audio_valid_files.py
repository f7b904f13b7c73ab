"""Valid files that libsndfile alone refuses or cuts short are decoded whole (issue 27), each
made at test time from the shared recordings with soundfile and byte edits."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from load_tests.audio_mutants import clip, encode, named_cases
from sevensense.audio.decode import NamedSource, iter_mono_blocks
from sevensense.errors import UnsupportedAudioError
from tests.conftest import audio

CASES = named_cases(600.0)


def decode(source: object) -> np.ndarray:
    return np.concatenate([b for _, b in iter_mono_blocks(source)])  # type: ignore[arg-type]


def seed() -> np.ndarray:
    x, _ = clip()
    return np.asarray(sf.read(io.BytesIO(encode(x, 48_000, "WAV", "PCM_16")), dtype="float32")[0])


def test_flac_of_unknown_length_decodes_whole() -> None:
    data = CASES["ok_flac_total_unknown.flac"][0]
    assert sf.info(io.BytesIO(data)).frames > 2**60  # libsndfile's "unknown"
    got = decode(data)
    x, _ = clip()
    np.testing.assert_allclose(got, x, atol=1e-4)  # every sample, none after


def test_every_link_of_a_chained_ogg_is_decoded_at_the_first_links_rate() -> None:
    data = CASES["ok_ogg_chained.ogg"][0]
    with sf.SoundFile(io.BytesIO(data)) as f:
        first = f.frames  # libsndfile stops after the first link: 3 s at 16 kHz
    got = decode(data)
    assert first == 48_000
    assert len(got) == pytest.approx(48_000 + 2 * 16_000, abs=64)  # + 2 s at 24 kHz, resampled
    assert np.std(got[48_000 + 1000 :]) > 0.01  # the second link is sound, not padding


def test_chained_ogg_from_a_path_and_from_bytes_agree(tmp_path: Path) -> None:
    path = tmp_path / "chain.ogg"
    path.write_bytes(CASES["ok_ogg_chained.ogg"][0])
    np.testing.assert_array_equal(decode(path), decode(path.read_bytes()))


def test_an_mp3_whose_xing_header_lies_decodes_its_real_length() -> None:
    got = decode(CASES["ok_mp3_xing_lies.mp3"][0])
    assert len(got) / 16_000 == pytest.approx(10.0, abs=0.05)


def test_an_mp3_behind_a_damaged_id3_tag_decodes_like_the_file_on_disk(tmp_path: Path) -> None:
    data = CASES["ok_mp3_id3_too_small.mp3"][0]
    on_disk = tmp_path / "call.mp3"
    on_disk.write_bytes(data)
    want = decode(on_disk)
    np.testing.assert_array_equal(decode(NamedSource(io.BytesIO(data), "call.mp3")), want)
    assert len(want) / 16_000 == pytest.approx(10.0, abs=0.05)
    ref = decode(audio("perch_testclip_10s_16k.mp3"))
    np.testing.assert_allclose(want[: len(ref)], ref[: len(want)], atol=1e-6)
    with pytest.raises(UnsupportedAudioError):  # no name: nothing says it is an MP3
        decode(data)


@pytest.mark.parametrize(
    "name", ["ok_wav_chunks_before_fmt.wav", "ok_wav_rf64.wav", "ok_wav_extensible.wav"]
)
def test_legal_wav_variants_give_the_same_samples(name: str) -> None:
    got = decode(CASES[name][0])
    want = seed()
    np.testing.assert_allclose(got, want, atol=1e-4)  # 24-bit WAVEX holds 16-bit exactly
