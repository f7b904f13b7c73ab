"""Decoding any container soundfile/libsndfile reads, block by block, to mono float32.

Downmix rule: the arithmetic mean of all channels. It keeps the level of sound present on
every channel (no clipping, unlike a sum) and never drops a channel that alone carries the
call, which picking channel 0 would.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from sevensense.errors import (
    CorruptAudioError,
    EmptyAudioError,
    InvalidSamplesError,
    UnsupportedAudioError,
)

AudioSource = str | Path | bytes | BinaryIO

_NOT_AUDIO_HINTS = ("format not recognised", "unknown format", "not a valid", "unsupported")


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def _describe(source: AudioSource) -> str:
    if isinstance(source, str | Path):
        return str(source)
    return "<upload>"


def _open(source: AudioSource) -> sf.SoundFile:
    name = _describe(source)
    if isinstance(source, bytes):
        if not source:
            raise EmptyAudioError("the audio payload is empty (0 bytes)")
        source = io.BytesIO(source)
    elif hasattr(source, "seek") and hasattr(source, "tell"):
        here = source.tell()
        end = source.seek(0, io.SEEK_END)
        source.seek(here)
        if end == here == 0:
            raise EmptyAudioError(f"{name}: the audio payload is empty (0 bytes)", source=name)
    elif isinstance(source, str | Path):
        path = Path(source)
        if not path.exists():
            raise CorruptAudioError(f"no such file: {path}", source=str(path))
        if path.is_file() and path.stat().st_size == 0:
            raise EmptyAudioError(f"{path} is empty (0 bytes)", source=str(path))
    try:
        return sf.SoundFile(source)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        text = str(exc).lower()
        reason = _reason(exc)
        if any(hint in text for hint in _NOT_AUDIO_HINTS):
            raise UnsupportedAudioError(
                f"{name}: not a recognised audio format (WAV, FLAC, OGG/Vorbis, OGG/Opus, MP3 "
                f"are supported): {reason}",
                source=name,
            ) from exc
        raise CorruptAudioError(f"{name}: cannot decode audio: {reason}", source=name) from exc


def _reason(exc: Exception) -> str:
    """libsndfile's own words, without its "Error opening <object repr>:" preamble."""
    text = str(exc)
    if text.startswith("Error opening") and ": " in text:
        text = text.split(": ", 1)[1]
    return text.strip()


def probe(source: AudioSource) -> AudioInfo:
    """Header facts without decoding the payload (frames may be an estimate for MP3)."""
    with _open(source) as f:
        return AudioInfo(f.samplerate, f.channels, max(int(f.frames), 0), f.format, f.subtype)


def iter_mono_blocks(
    source: AudioSource, block_frames: int = 65536
) -> Iterator[tuple[AudioInfo, np.ndarray]]:
    """Yield ``(info, block)`` pairs of mono float32 samples; memory is O(block_frames).

    Raises typed errors for empty, undecodable and NaN/Inf-carrying audio. A decode error in
    the middle of a file (truncation) surfaces as CorruptAudioError naming the position.
    """
    name = _describe(source)
    with _open(source) as f:
        info = AudioInfo(f.samplerate, f.channels, max(int(f.frames), 0), f.format, f.subtype)
        if info.sample_rate <= 0:
            raise CorruptAudioError(f"{name}: invalid sample rate {info.sample_rate}")
        total = 0
        while True:
            try:
                block = f.read(block_frames, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise CorruptAudioError(
                    f"{name}: decoding failed after {total} frames "
                    f"({total / info.sample_rate:.2f} s): {exc}",
                    source=name,
                    frames_decoded=total,
                ) from exc
            if block.shape[0] == 0:
                break
            mono = block[:, 0] if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float32)
            if not np.isfinite(mono).all():
                bad = int(np.argmin(np.isfinite(mono)))
                raise InvalidSamplesError(
                    f"{name}: NaN or infinite sample at {(total + bad) / info.sample_rate:.3f} s",
                    source=name,
                    sample_index=total + bad,
                )
            total += mono.shape[0]
            yield info, np.ascontiguousarray(mono, dtype=np.float32)
        if total == 0:
            raise EmptyAudioError(f"{name}: the recording holds no samples", source=name)
