"""Decoding any container soundfile/libsndfile reads, block by block, to mono float32.

The one decode-and-validate path of every face (CLI, HTTP, worker): the same bytes under
the same name get the same samples or the same typed error wherever they arrive.

Downmix rule: the arithmetic mean of all channels. It keeps the level of sound present on
every channel (no clipping, unlike a sum) and never drops a channel that alone carries the
call, which picking channel 0 would.

A header's claims are not trusted for work: the rate is checked against the work bounds
(``audio/bounds.py``), a declared length refuses early only when the decoder can seek past
the limit (so the bytes hold it), and reads go into one buffer of at most
``2 * block_frames`` samples whatever the channel count.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
from soundfile import _ffi, _snd  # the pinned soundfile's C bindings: reads without seeks

from sevensense.audio.bounds import check_source_rate
from sevensense.audio.containers import ByteWindow, ogg_link_starts
from sevensense.audio.memory import release_freed
from sevensense.audio.resample import StreamResampler
from sevensense.errors import (
    AudioTooLongError,
    CorruptAudioError,
    EmptyAudioError,
    InvalidSamplesError,
    UnsupportedAudioError,
)


@dataclass(frozen=True)
class NamedSource:
    """An open payload with the file name it was uploaded or stored under.

    libsndfile falls back on a path's extension when sniffing the content fails (an MP3
    behind a damaged ID3 tag); an upload or an S3 object gets the same fallback through
    ``name``, so it decodes exactly as the same file on disk does."""

    stream: BinaryIO
    name: str | None = None


AudioSource = str | Path | bytes | BinaryIO | NamedSource

_NOT_AUDIO_HINTS = ("format not recognised", "unknown format", "not a valid", "unsupported")
_UNKNOWN_FRAMES = 1 << 50  # libsndfile's "length unknown" (FLAC STREAMINFO total 0) and kin
_SUFFIX = re.compile(r"\.([A-Za-z0-9]{1,8})$")


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


def _reason(exc: Exception) -> str:
    """libsndfile's own words, without its "Error opening <object repr>:" preamble."""
    text = str(exc)
    if text.startswith("Error opening") and ": " in text:
        text = text.split(": ", 1)[1]
    return text.strip()


class _Payload:
    """One recording's bytes, which can be opened (again) and cut into byte windows."""

    def __init__(self, source: AudioSource) -> None:
        self.path: Path | None = None
        self.stream: BinaryIO | None = None
        self.start = 0
        hint: str | None = None
        if isinstance(source, NamedSource):
            hint, source = source.name, source.stream
        if isinstance(source, str | Path):
            self.path = Path(source)
            self.name = str(source)
            if not self.path.exists():
                raise CorruptAudioError(f"no such file: {self.path}", source=self.name)
            if self.path.is_file() and self.path.stat().st_size == 0:
                raise EmptyAudioError(f"{self.path} is empty (0 bytes)", source=self.name)
            self.hint = None  # libsndfile sees the path's extension itself
            return
        self.name = hint or "<upload>"
        match = _SUFFIX.search(hint or "")
        self.hint = match.group(1).lower() if match else None
        if isinstance(source, bytes):
            if not source:
                raise EmptyAudioError("the audio payload is empty (0 bytes)")
            source = io.BytesIO(source)
        self.stream = source
        self.start = source.tell()
        end = source.seek(0, io.SEEK_END)
        source.seek(self.start)
        if end == self.start == 0:
            raise EmptyAudioError(f"{self.name}: the audio payload is empty (0 bytes)")
        self._spilled: str | None = None

    def open(self) -> sf.SoundFile:
        if self.stream is not None:
            self.stream.seek(self.start)
        try:
            return sf.SoundFile(self.path if self.path is not None else self.stream)
        except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
            error = self.error(exc)
        if isinstance(error, UnsupportedAudioError) and self.hint is not None:
            return self._open_named(error)
        raise error

    def _open_named(self, error: UnsupportedAudioError) -> sf.SoundFile:
        """The upload as a file named like it: libsndfile's extension fallback, exactly."""
        assert self.stream is not None and self.hint is not None
        fd, spilled = tempfile.mkstemp(prefix="sevensense-", suffix=f".{self.hint}")
        try:
            with os.fdopen(fd, "wb") as out:
                self.stream.seek(self.start)
                shutil.copyfileobj(self.stream, out, 1 << 20)
            try:
                return sf.SoundFile(spilled)
            except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
                raise self.error(exc) from error  # as the same file on disk fails
        finally:
            os.unlink(spilled)  # the open descriptor keeps the bytes until it is closed

    def error(self, exc: Exception) -> UnsupportedAudioError | CorruptAudioError:
        reason = _reason(exc)
        if any(hint in str(exc).lower() for hint in _NOT_AUDIO_HINTS):
            return UnsupportedAudioError(
                f"{self.name}: not a recognised audio format (WAV, FLAC, OGG/Vorbis, OGG/Opus, "
                f"MP3 are supported): {reason}",
                source=self.name,
            )
        return CorruptAudioError(f"{self.name}: cannot decode audio: {reason}", source=self.name)

    def raw(self) -> contextlib.AbstractContextManager[BinaryIO]:
        """The payload's bytes as one seekable stream."""
        if self.stream is not None:
            return contextlib.nullcontext(self.stream)
        assert self.path is not None
        return self.path.open("rb")


def probe(source: AudioSource) -> AudioInfo:
    """Header facts without decoding the payload: a claim (frames may be an estimate, or
    absurd, for MP3, FLAC of unknown length and hostile files)."""
    with _Payload(source).open() as f:
        return _info(f)


def _info(f: sf.SoundFile) -> AudioInfo:
    return AudioInfo(f.samplerate, f.channels, max(int(f.frames), 0), f.format, f.subtype)


def _holds(f: sf.SoundFile, frames: int) -> bool:
    """Whether the decoder can seek to ``frames`` and read a sample there: true only when
    the bytes hold that much audio, whatever the header claims."""
    if not f.seekable():
        return False
    try:
        f.seek(frames)
        one = np.empty((1, f.channels), dtype=np.float32)
        return _read(f, one) > 0
    except (sf.LibsndfileError, RuntimeError):
        return False


def _read(f: sf.SoundFile, out: np.ndarray) -> int:
    """Frames read into ``out``; soundfile's own ``read`` seeks after every read, which
    fails where the length is unknown (FLAC STREAMINFO total 0)."""
    n = int(_snd.sf_readf_float(f._file, _ffi.cast("float *", _ffi.from_buffer(out)), len(out)))
    if _snd.sf_error(f._file):
        raise RuntimeError(_ffi.string(_snd.sf_strerror(f._file)).decode(errors="replace"))
    return n


def _too_long(payload: _Payload, f: sf.SoundFile, max_duration_s: float | None) -> None:
    info = _info(f)
    if max_duration_s is None or info.frames <= max_duration_s * info.sample_rate:
        return
    if _holds(f, int(max_duration_s * info.sample_rate)):
        unknown = info.frames >= _UNKNOWN_FRAMES
        claim = "no length" if unknown else f"{info.duration_s:.1f} s"
        raise AudioTooLongError(
            f"recording is longer than the {max_duration_s:.1f} s limit (its header says {claim})",
            limit_s=max_duration_s,
            **({} if unknown else {"duration_s": round(info.duration_s, 3)}),
        )


def _blocks(
    payload: _Payload, f: sf.SoundFile, block_frames: int, done: int, rate: int
) -> Iterator[np.ndarray]:
    """Mono blocks of one open link; ``done`` frames came before it (for messages)."""
    frames = max(1, min(block_frames, 2 * block_frames // f.channels))
    buffer = np.empty((frames, f.channels), dtype=np.float32)
    while True:
        try:
            n = _read(f, buffer)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise CorruptAudioError(
                f"{payload.name}: decoding failed after {done} frames ({done / rate:.2f} s): {exc}",
                source=payload.name,
                frames_decoded=done,
            ) from exc
        if n == 0:
            return
        block = buffer[:n]
        mono = block[:, 0].copy() if f.channels == 1 else block.mean(axis=1, dtype=np.float32)
        if not np.isfinite(mono).all():
            bad = int(np.argmin(np.isfinite(mono)))
            raise InvalidSamplesError(
                f"{payload.name}: NaN or infinite sample at {(done + bad) / rate:.3f} s",
                source=payload.name,
                sample_index=done + bad,
            )
        done += n
        yield mono


def _later_links(
    payload: _Payload, block_frames: int, done: int, rate: int
) -> Iterator[np.ndarray]:
    """The links libsndfile stops before, each at the first link's rate."""
    with payload.raw() as raw:
        end = raw.seek(0, io.SEEK_END)
        starts = ogg_link_starts(raw, payload.start, end)
        for start, stop in zip(starts, [*starts[1:], end], strict=False):
            try:
                f = sf.SoundFile(ByteWindow(raw, start, stop))
            except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
                raise payload.error(exc) from exc
            with f:
                check_source_rate(f.samplerate, payload.name)
                resampler = StreamResampler(f.samplerate, rate) if f.samplerate != rate else None
                for mono in _blocks(payload, f, block_frames, done, f.samplerate):
                    done += mono.shape[0]
                    yield resampler.process(mono) if resampler else mono
                if resampler is not None:
                    yield resampler.flush()


def iter_mono_blocks(
    source: AudioSource, block_frames: int = 65536, max_duration_s: float | None = None
) -> Iterator[tuple[AudioInfo, np.ndarray]]:
    """Yield ``(info, block)`` pairs of mono float32 samples; memory is O(block_frames).

    Raises typed errors for empty, undecodable, NaN/Inf-carrying audio, rates outside the
    work bounds, and (``max_duration_s``) a length the bytes really hold beyond the limit.
    The limit on what is decoded is the caller's (the pipeline counts the samples). A decode
    error in the middle of a file (truncation) surfaces as CorruptAudioError naming the
    position. A chained Ogg file yields all its links, one after the other.
    """
    payload = _Payload(source)
    f = payload.open()
    try:
        info = _info(f)
        if info.sample_rate <= 0:
            raise CorruptAudioError(f"{payload.name}: invalid sample rate {info.sample_rate}")
        check_source_rate(info.sample_rate, payload.name)
        if max_duration_s is not None and info.frames > max_duration_s * info.sample_rate:
            _too_long(payload, f, max_duration_s)
            f.close()
            f = payload.open()  # the probe's seek may leave a decoder unable to restart
        total = 0
        for mono in _blocks(payload, f, block_frames, 0, info.sample_rate):
            total += mono.shape[0]
            yield info, mono
        if info.format == "OGG":
            for mono in _later_links(payload, block_frames, total, info.sample_rate):
                if mono.size:
                    total += mono.shape[0]
                    yield info, mono
        if total == 0:
            raise EmptyAudioError(f"{payload.name}: the recording holds no samples")
    finally:
        f.close()
        release_freed()
