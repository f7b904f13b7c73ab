"""S3ObjectReader: libsndfile decodes real recordings straight from S3 (moto on 127.0.0.1),
sample for sample as from the local file, while holding one block in memory."""

from __future__ import annotations

import io
import random
import uuid
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from sevensense.errors import ObjectNotFoundError, StorageError
from sevensense.storage.s3_stream import S3ObjectReader
from tests.conftest import audio, aws_client

pytestmark = pytest.mark.timeout(60)

KIB = 1024
CLIPS = [
    "perch_testclip_10s_16k.wav",
    "perch_testclip_10s_16k.flac",
    "perch_testclip_10s_16k.ogg",
    "perch_testclip_10s_16k.mp3",
    "soundscape_birdnet_120s_48k.flac",
    "soundscape_birdnet_120s_48k.mp3",
]


@pytest.fixture(scope="module")
def s3(moto_endpoint: str) -> Any:
    return aws_client("s3", moto_endpoint)


@pytest.fixture(scope="module")
def bucket(s3: Any) -> str:
    """The shared recordings, uploaded once (to moto, never into the repository)."""
    name = f"audio-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    for clip in CLIPS:
        s3.upload_file(str(audio(clip)), name, f"rec/{clip}")
    return name


def decode(source: Any) -> tuple[np.ndarray, int]:
    with sf.SoundFile(source) as f:
        return f.read(dtype="float32", always_2d=True), f.samplerate


@pytest.mark.parametrize("clip", CLIPS)
def test_decodes_exactly_like_the_local_file(s3: Any, bucket: str, clip: str) -> None:
    expected, rate = decode(audio(clip))
    block = 64 * KIB
    reader = S3ObjectReader(s3, bucket, f"rec/{clip}", block_size=block)

    samples, got_rate = decode(io.BufferedReader(reader))

    reader.raise_for_error()
    assert got_rate == rate
    assert samples.shape == expected.shape
    np.testing.assert_array_equal(samples, expected)
    size = audio(clip).stat().st_size
    assert reader.size == size
    # Read essentially once: libsndfile's header probes may refetch a block or two.
    assert reader.bytes_fetched <= size + 4 * block


def test_the_raw_reader_works_without_a_buffer(s3: Any, bucket: str) -> None:
    clip = "perch_testclip_10s_16k.flac"
    reader = S3ObjectReader(s3, bucket, f"rec/{clip}", block_size=32 * KIB)
    np.testing.assert_array_equal(decode(reader)[0], decode(audio(clip))[0])


def test_a_partial_decode_fetches_a_small_part_with_one_block_held(s3: Any, bucket: str) -> None:
    clip = "soundscape_birdnet_120s_48k.flac"
    block = 64 * KIB
    reader = S3ObjectReader(s3, bucket, f"rec/{clip}", block_size=block)
    with sf.SoundFile(audio(clip)) as local:
        local.seek(90 * 48_000)
        expected = local.read(48_000, dtype="float32")

    with sf.SoundFile(io.BufferedReader(reader, buffer_size=8 * KIB)) as remote:
        remote.seek(90 * 48_000)
        got = remote.read(48_000, dtype="float32")
        held = reader.cached_bytes

    np.testing.assert_array_equal(got, expected)
    assert reader.bytes_fetched < reader.size / 8  # one second of 120 out of 3.3 MB
    assert held <= block


def test_the_block_cache_stays_one_block_through_a_full_decode(s3: Any, bucket: str) -> None:
    clip = "soundscape_birdnet_120s_48k.mp3"
    block = 32 * KIB
    reader = S3ObjectReader(s3, bucket, f"rec/{clip}", block_size=block)
    held = []
    frames = 0
    with sf.SoundFile(io.BufferedReader(reader, buffer_size=4 * KIB)) as f:
        for chunk in f.blocks(blocksize=48_000, dtype="float32"):
            frames += len(chunk)
            held.append(reader.cached_bytes)
    reader.raise_for_error()
    assert frames == sf.info(audio(clip)).frames
    assert max(held) <= block
    assert reader.requests >= reader.size // block  # many small GETs, not one big one


def test_random_seeks_and_reads_match_the_bytes(s3: Any, bucket: str) -> None:
    clip = "perch_testclip_10s_16k.ogg"
    data = audio(clip).read_bytes()
    reader = S3ObjectReader(s3, bucket, f"rec/{clip}", block_size=7 * KIB)
    rng = random.Random(7)
    for _ in range(60):
        offset = rng.randrange(0, len(data) + 100)
        length = rng.randrange(0, 20 * KIB)
        assert reader.seek(offset) == offset
        buffer = bytearray(length)
        n = reader.readinto(buffer)
        assert bytes(buffer[:n]) == data[offset : offset + length]
        assert reader.tell() == offset + n
    assert reader.seek(-5, io.SEEK_END) == len(data) - 5
    assert reader.read() == data[-5:]
    assert reader.read(10) == b""
    with pytest.raises(OSError):
        reader.seek(-1)


def test_an_object_replaced_mid_read_fails_loudly(s3: Any, bucket: str) -> None:
    key = f"rec/replaced-{uuid.uuid4().hex[:8]}.wav"
    s3.upload_file(str(audio("perch_testclip_10s_16k.wav")), bucket, key)
    original = audio("perch_testclip_10s_16k.wav").read_bytes()
    reader = S3ObjectReader(s3, bucket, key, block_size=64 * KIB)
    assert reader.read(1000) == original[:1000]
    s3.put_object(Bucket=bucket, Key=key, Body=audio("perch_clap_21s_16k.wav").read_bytes())

    assert reader.read(1000) == original[1000:2000]  # still the cached block
    reader.seek(200 * KIB)
    with pytest.raises(StorageError, match="changed while being read"):
        reader.read(10)
    with pytest.raises(StorageError):  # and stays failed
        reader.raise_for_error()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_replacement_seen_through_soundfile_is_reported_after_the_decode(
    s3: Any, bucket: str
) -> None:
    key = f"rec/replaced-{uuid.uuid4().hex[:8]}.flac"
    s3.upload_file(str(audio("soundscape_birdnet_120s_48k.flac")), bucket, key)
    reader = S3ObjectReader(s3, bucket, key, block_size=64 * KIB)
    replacement = audio("perch_testclip_10s_16k.flac").read_bytes()
    with sf.SoundFile(io.BufferedReader(reader)) as f:
        f.read(48_000)
        s3.put_object(Bucket=bucket, Key=key, Body=replacement)
        # The exception dies in libsndfile's C callback: a short read or a vague error.
        try:
            complete = len(f.read(dtype="float32")) == 119 * 48_000
        except sf.LibsndfileError:
            complete = False

    assert not complete
    with pytest.raises(StorageError, match="changed while being read"):
        reader.raise_for_error()


def test_missing_object_and_bucket(s3: Any, bucket: str) -> None:
    with pytest.raises(ObjectNotFoundError):
        S3ObjectReader(s3, bucket, "rec/nothing.wav")
    with pytest.raises(ObjectNotFoundError):
        S3ObjectReader(s3, f"no-such-{uuid.uuid4().hex[:8]}", "x.wav")


def test_an_empty_object_reads_nothing_without_a_get(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="rec/empty", Body=b"")
    reader = S3ObjectReader(s3, bucket, "rec/empty")
    assert reader.read() == b""
    assert reader.requests == 0
