"""What a reviewer listens to and looks at: one window's audio as WAV and its spectrogram as
a PNG, read from the recording on disk (only under the configured roots) by seeking to the
span, so memory is bounded by the span, never the recording. The PNG is written with zlib
alone: no imaging library for one grey-scale picture."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np

from sevensense.errors import AudioUnreachableError, CorruptAudioError, RequestError
from sevensense.index.annotations import IndexedWindow

MAX_SNIPPET_S = 60.0
N_FFT = 512
HOP = 128
DYNAMIC_DB = 80.0


def audio_path(window: IndexedWindow, roots: list[Path]) -> Path:
    """The window's recording when it is a file under one of ``roots`` (404 otherwise: a
    recording uploaded over HTTP is not kept, and nothing outside the roots is served)."""
    for candidate in (window.recording_id, window.source):
        if not candidate:
            continue
        path = Path(candidate).resolve()
        if path.is_file() and any(path.is_relative_to(r.resolve()) for r in roots):
            return path
    raise AudioUnreachableError(
        f"the audio of window {window.window_id} ({window.recording_id}) is not reachable "
        "here: only recordings under index.audio_roots are served",
        window_id=window.window_id,
    )


def read_span(path: Path, start_s: float, end_s: float) -> tuple[np.ndarray, int]:
    import soundfile as sf

    if end_s - start_s > MAX_SNIPPET_S:
        raise RequestError(f"a snippet is at most {MAX_SNIPPET_S:g} s")
    try:
        with sf.SoundFile(str(path)) as f:
            rate = int(f.samplerate)
            f.seek(min(int(start_s * rate), max(f.frames - 1, 0)))
            block = f.read(max(int((end_s - start_s) * rate), 1), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise CorruptAudioError(f"{path.name}: {exc}") from exc
    return np.ascontiguousarray(block.mean(axis=1), dtype=np.float32), rate


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def spectrogram(samples: np.ndarray) -> np.ndarray:
    """Log-magnitude STFT in dB, [freq, time], low frequencies last (image rows)."""
    x = np.pad(samples, (0, max(0, N_FFT - len(samples))))
    frames = 1 + (len(x) - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(frames)[:, None]
    mag = np.abs(np.fft.rfft(x[idx] * np.hanning(N_FFT), axis=1)).T
    db = 20.0 * np.log10(np.maximum(mag, 1e-10))
    return np.asarray(db[::-1], dtype=np.float32)


def png_bytes(db: np.ndarray) -> bytes:
    """Grey-scale 8-bit PNG, the loudest bin white, ``DYNAMIC_DB`` below it black."""
    top = float(db.max()) if db.size else 0.0
    pixels = np.clip((db - (top - DYNAMIC_DB)) / DYNAMIC_DB * 255.0, 0, 255).astype(np.uint8)
    height, width = pixels.shape
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )
