"""The reference set `sevensense check` embeds: real recordings, generated silence and
lossless re-encodings of one recording, all small enough to keep the check to seconds."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from sevensense.audio.decode import probe
from sevensense.errors import AudioError, ConfigError
from sevensense.inference.recordings import expand_paths
from sevensense.settings import ChecksSettings, repo_root

# Seconds of generated digital silence: shorter than any model window, one window of each
# model, and several windows with a padded tail.
SILENCE_S = (0.5, 3.0, 5.0, 12.5)
SILENCE_RATE = 16_000


@dataclass
class ReferenceSet:
    root: Path
    recordings: list[Path]
    silence: dict[str, bytes] = field(default_factory=dict)
    # One recording, and the same samples written again without loss in other containers.
    original: Path | None = None
    reencoded: dict[str, bytes] = field(default_factory=dict)
    labelled: list[Path] = field(default_factory=list)


def default_audio_dir() -> Path:
    return repo_root().parent / "shared" / "audio"


def _wav(samples: np.ndarray, rate: int, fmt: str, subtype: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def silence(seconds: float, rate: int = SILENCE_RATE) -> bytes:
    return _wav(np.zeros(round(seconds * rate), dtype=np.float32), rate, "WAV", "PCM_16")


def _lossless_source(recordings: list[Path]) -> Path | None:
    """The longest 16-bit PCM WAV up to 30 s: its samples survive FLAC and float WAV
    exactly, and it spans several windows of either model."""
    found: list[tuple[float, Path]] = []
    for path in recordings:
        if path.suffix.lower() != ".wav":
            continue
        try:
            info = probe(path)
        except AudioError:
            continue
        if info.subtype == "PCM_16" and info.duration_s <= 30:
            found.append((info.duration_s, path))
    return max(found)[1] if found else None


def reencode(path: Path) -> dict[str, bytes]:
    data, rate = sf.read(path, dtype="int16", always_2d=False)
    return {
        "flac_pcm16": _wav(data, rate, "FLAC", "PCM_16"),
        "wav_float32": _wav(data.astype(np.float32) / 32768.0, rate, "WAV", "FLOAT"),
    }


def reference_set(audio_dir: Path | None, settings: ChecksSettings) -> ReferenceSet:
    root = audio_dir or settings.audio_dir or default_audio_dir()
    if not root.is_dir():
        raise ConfigError(f"reference audio directory {root} does not exist", audio_dir=str(root))
    found = expand_paths([root])
    # Evenly spread over the sorted list, so a capped set still spans every folder.
    step = max(1, -(-len(found) // settings.max_files))
    recordings = found[::step][: settings.max_files]
    if not recordings:
        raise ConfigError(f"no audio files under {root}", audio_dir=str(root))
    original = _lossless_source(recordings)
    labelled_dir = root / "labelled"
    return ReferenceSet(
        root=root,
        recordings=recordings,
        silence={f"silence_{s:g}s": silence(s) for s in SILENCE_S},
        original=original,
        reencoded=reencode(original) if original else {},
        labelled=expand_paths([labelled_dir]) if labelled_dir.is_dir() else [],
    )
