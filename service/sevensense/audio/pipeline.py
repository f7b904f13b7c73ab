"""The whole pre-processing chain for one recording, lazily: decode → resample → window →
normalise. The engine, the CLI, the worker and the service all call this one function.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from sevensense.audio.decode import AudioInfo, AudioSource, iter_mono_blocks
from sevensense.audio.normalize import NormalizationSpec, normalize
from sevensense.audio.resample import StreamResampler
from sevensense.audio.windowing import Padding, SkippedWindow, Window, WindowSpec, iter_windows
from sevensense.errors import AudioTooLongError


@dataclass(frozen=True)
class PreprocessConfig:
    sample_rate: int
    window_samples: int
    overlap: float = 0.0
    padding: Padding = Padding.ZERO_PAD
    energy_threshold: float = 0.0
    resample_quality: str = "high"
    normalization: NormalizationSpec = field(default_factory=NormalizationSpec.raw)
    block_frames: int = 65536
    max_duration_s: float | None = None

    def window_spec(self) -> WindowSpec:
        return WindowSpec.from_overlap(
            self.window_samples,
            self.sample_rate,
            self.overlap,
            self.padding,
            self.energy_threshold,
        )


@dataclass
class StreamStats:
    """Filled in while the stream is consumed; complete once it is exhausted."""

    info: AudioInfo | None = None
    input_frames: int = 0
    windows: int = 0
    skipped: list[SkippedWindow] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        if self.info is None or self.info.sample_rate == 0:
            return 0.0
        return self.input_frames / self.info.sample_rate


def _resampled(
    source: AudioSource, config: PreprocessConfig, stats: StreamStats
) -> Iterator[np.ndarray]:
    resampler: StreamResampler | None = None
    limit = config.max_duration_s
    for info, block in iter_mono_blocks(source, config.block_frames):
        if resampler is None:
            stats.info = info
            if limit is not None and info.frames > limit * info.sample_rate:
                raise AudioTooLongError(
                    f"recording is {info.duration_s:.1f} s; the limit is {limit:.1f} s",
                    duration_s=info.duration_s,
                    limit_s=limit,
                )
            resampler = StreamResampler(
                info.sample_rate, config.sample_rate, config.resample_quality
            )
        stats.input_frames += block.shape[0]
        if limit is not None and stats.input_frames > limit * info.sample_rate:
            raise AudioTooLongError(f"recording exceeds the {limit:.1f} s limit", limit_s=limit)
        out = resampler.process(block)
        if out.size:
            yield out
    if resampler is not None:
        tail = resampler.flush()
        if tail.size:
            yield tail


def prepare_windows(
    source: AudioSource, config: PreprocessConfig, stats: StreamStats | None = None
) -> Iterator[Window]:
    """Model-ready windows of one recording. Skipped windows go to ``stats.skipped``."""
    stats = stats if stats is not None else StreamStats()
    for item in iter_windows(_resampled(source, config, stats), config.window_spec()):
        if isinstance(item, SkippedWindow):
            stats.skipped.append(item)
            continue
        stats.windows += 1
        yield Window(
            item.index,
            item.start_sample,
            normalize(item.samples, config.normalization),
            item.sample_rate,
            item.valid_samples,
            item.fill,
        )
