"""Work bounds that hold whatever a header declares (issue 27): the minimum source rate, the
maximum resampling ratio, the duration limit on decoded samples, and a memory ceiling per
recording that no declared rate or length moves."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from load_tests.audio_mutants import encode, named_cases
from sevensense.audio.bounds import MAX_RESAMPLE_RATIO, MIN_SAMPLE_RATE_HZ
from sevensense.audio.decode import iter_mono_blocks
from sevensense.audio.live import LiveWindows
from sevensense.audio.pipeline import PreprocessConfig, StreamStats, prepare_windows
from sevensense.errors import AudioTooLongError, SampleRateError
from tests.conftest import REPO

BIRDNET = PreprocessConfig(sample_rate=48_000, window_samples=144_000, max_duration_s=600.0)
CASES = named_cases(600.0)

# Measured (2 cores, the probe below): the pipeline's own peak (traced or RSS) is under
# 6 MB for every file here, from a 7-KB hour at 1 Hz to 1.1 MHz and 64 channels. What a
# request may hold beyond it is a few windows per chunk in flight (docs: audio-and-outputs).
PEAK_RISE_BOUND_MB = 32


def windows(data: bytes, config: PreprocessConfig = BIRDNET) -> tuple[int, StreamStats]:
    stats = StreamStats()
    return sum(1 for _ in prepare_windows(io.BytesIO(data), config, stats)), stats


@pytest.mark.parametrize("name", ["bad_wav_hour_at_1hz.wav", "bad_flac_says_3hz.flac"])
def test_a_rate_below_the_minimum_is_refused_before_any_sample(name: str) -> None:
    with pytest.raises(SampleRateError) as err:
        windows(CASES[name][0])
    assert err.value.http_status == 422 and err.value.code == "unsupported_sample_rate"
    assert err.value.details["min_sample_rate_hz"] == MIN_SAMPLE_RATE_HZ
    assert f"{MIN_SAMPLE_RATE_HZ} Hz" in err.value.message


def test_the_resampling_ratio_is_bounded_both_ways() -> None:
    x = np.random.default_rng(0).normal(0, 0.1, 48_000).astype(np.float32)
    fast = int(48_000 * MAX_RESAMPLE_RATIO) + 1000  # just over 24x BirdNET's rate
    with pytest.raises(SampleRateError, match=r"most the resampler takes is 24x"):
        windows(encode(x, fast, "WAV", "PCM_16"))
    assert windows(encode(x, 768_000, "WAV", "PCM_16"))[1].info is not None  # 16x: fine
    low = PreprocessConfig(sample_rate=48_000, window_samples=144_000)
    assert windows(encode(x, MIN_SAMPLE_RATE_HZ, "WAV", "PCM_16"), low)[0] == 4  # 12x up


def test_a_live_stream_takes_the_same_minimum() -> None:
    with pytest.raises(SampleRateError):
        LiveWindows(MIN_SAMPLE_RATE_HZ - 1, BIRDNET)
    LiveWindows(MIN_SAMPLE_RATE_HZ, BIRDNET)


def test_a_truthful_header_refuses_early_and_a_silent_one_after_the_limit() -> None:
    # The WAV's bytes hold 601 s: refused before one sample is decoded.
    with pytest.raises(AudioTooLongError) as err:
        windows(CASES["bad_wav_over_limit.wav"][0])
    assert err.value.details == {"duration_s": 601.0, "limit_s": 600.0}
    assert err.value.http_status == 413
    # FLAC of unknown length: refused early too, because the decoder can seek past 600 s.
    with pytest.raises(AudioTooLongError, match="header says no length"):
        windows(CASES["bad_flac_over_limit_unknown_length.flac"][0])


def test_a_lying_length_is_checked_against_the_samples() -> None:
    # The MP3's Xing header claims 2**31 frames; the file holds 10 s: decoded, not refused.
    count, stats = windows(CASES["ok_mp3_xing_lies.mp3"][0])
    assert stats.info is not None and stats.info.duration_s > 600
    assert count == 4 and stats.duration_s == pytest.approx(10.0, abs=0.1)


def test_the_limit_holds_on_decoded_samples_where_no_seek_can_prove_it() -> None:
    # An Ogg chain: the first link's header says 3 s, the chain holds 3 s x 4; limit 5 s.
    ogg = encode(np.random.default_rng(1).normal(0, 0.1, 48_000 * 3), 48_000, "OGG", "VORBIS")
    config = PreprocessConfig(sample_rate=48_000, window_samples=144_000, max_duration_s=5.0)
    stats = StreamStats()
    with pytest.raises(AudioTooLongError, match=r"longer than the 5\.0 s limit"):
        for _ in prepare_windows(io.BytesIO(ogg * 4), config, stats):
            pass
    assert 5.0 < stats.duration_s <= 5.0 + 65536 / 48_000  # at most one block past it


def test_many_channels_are_read_in_bounded_blocks() -> None:
    x = np.random.default_rng(2).normal(0, 0.1, (4_000, 64)).astype(np.float32)
    blocks = [b for _, b in iter_mono_blocks(encode(x, 48_000, "WAV", "FLOAT"), 65_536)]
    assert max(b.shape[0] for b in blocks) <= 2 * 65_536 // 64
    np.testing.assert_allclose(np.concatenate(blocks), x.mean(axis=1), atol=1e-6)


_PROBE = """
import json, resource, sys, tracemalloc
from sevensense.audio.pipeline import PreprocessConfig, prepare_windows
config = PreprocessConfig(sample_rate=48000, window_samples=144000, max_duration_s=600.0)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
try:
    n = sum(1 for _ in prepare_windows(sys.argv[1], config))
    outcome = "ok"
except Exception as exc:
    outcome = getattr(exc, "code", type(exc).__name__)
traced = tracemalloc.get_traced_memory()[1] / 2**20
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"outcome": outcome, "rise_mb": max((peak - base) / 1024, traced)}))
"""


def test_peak_memory_does_not_follow_the_declared_rate_or_length(tmp_path: Path) -> None:
    hostile = {k: v for k, v in CASES.items() if k.startswith(("bad_wav", "bad_flac", "ok_"))}
    x = np.random.default_rng(3).normal(0, 0.1, (48_000, 64)).astype(np.float32)
    hostile["many_channels.wav"] = (encode(x, 48_000, "WAV", "FLOAT"), "ok")
    hostile["fast.wav"] = (encode(x[:, 0], 1_100_000, "WAV", "FLOAT"), "ok")
    rises = {}
    for name, (data, want) in hostile.items():
        path = tmp_path / name
        path.write_bytes(data)
        out = subprocess.run(
            [sys.executable, "-c", _PROBE, str(path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        got = json.loads(out.stdout.strip().splitlines()[-1])
        assert got["outcome"] == want, (name, got)
        rises[name] = got["rise_mb"]
    print(rises)
    assert max(rises.values()) < PEAK_RISE_BOUND_MB, rises
