"""The whole pre-processing chain for one recording, lazily: decode → resample → window →
normalise. The engine, the CLI, the worker and the service all call this one function.
"""

from __future__ import annotations

import time
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
    min_tail_samples: int = 0  # BirdNET-Analyzer's segment rule (see windowing)

    def window_spec(self) -> WindowSpec:
        return WindowSpec.from_overlap(
            self.window_samples,
            self.sample_rate,
            self.overlap,
            self.padding,
            self.energy_threshold,
            self.min_tail_samples,
        )


@dataclass
class StreamStats:
    """Filled in while the stream is consumed; complete once it is exhausted."""

    info: AudioInfo | None = None
    input_frames: int = 0
    windows: int = 0
    skipped: list[SkippedWindow] = field(default_factory=list)
    decode_s: float = 0.0
    resample_s: float = 0.0
    window_s: float = 0.0

    @property
    def duration_s(self) -> float:
        if self.info is None or self.info.sample_rate == 0:
            return 0.0
        return self.input_frames / self.info.sample_rate


def _resampled(
    source: AudioSource,
    config: PreprocessConfig,
    stats: StreamStats,
    decoded: Iterator[tuple[AudioInfo, np.ndarray]] | None = None,
) -> Iterator[np.ndarray]:
    resampler: StreamResampler | None = None
    limit = config.max_duration_s
    blocks = (
        decoded
        if decoded is not None
        else iter_mono_blocks(source, config.block_frames, config.max_duration_s)
    )
    while True:
        tick = time.perf_counter()
        item = next(blocks, None)
        stats.decode_s += time.perf_counter() - tick
        if item is None:
            break
        info, block = item
        if resampler is None:
            stats.info = info  # a header's length refuses early in decode, if the bytes hold it
            resampler = StreamResampler(
                info.sample_rate, config.sample_rate, config.resample_quality
            )
        stats.input_frames += block.shape[0]
        if limit is not None and stats.input_frames > limit * info.sample_rate:
            raise AudioTooLongError(
                f"recording is longer than the {limit:.1f} s limit (decoded)", limit_s=limit
            )
        tick = time.perf_counter()
        out = resampler.process(block)
        stats.resample_s += time.perf_counter() - tick
        if out.size:
            yield out
    if resampler is not None:
        tick = time.perf_counter()
        tail = resampler.flush()
        stats.resample_s += time.perf_counter() - tick
        if tail.size:
            yield tail


def model_window(item: Window, normalization: NormalizationSpec) -> Window:
    """A cut window as the model takes it: files and live streams both go through this."""
    return Window(
        item.index,
        item.start_sample,
        normalize(item.samples, normalization),
        item.sample_rate,
        item.valid_samples,
        item.fill,
    )


def prepare_windows(
    source: AudioSource,
    config: PreprocessConfig,
    stats: StreamStats | None = None,
    decoded: Iterator[tuple[AudioInfo, np.ndarray]] | None = None,
) -> Iterator[Window]:
    """Model-ready windows of one recording. Skipped windows go to ``stats.skipped``.

    ``decoded``: mono blocks already being decoded (one branch of an ``itertools.tee`` of
    :func:`iter_mono_blocks`), so that one decode feeds two models' rates."""
    stats = stats if stats is not None else StreamStats()
    items = iter_windows(_resampled(source, config, stats, decoded), config.window_spec())

    def windowing_time(tick: float, upstream: float) -> float:
        # What next() spent beyond the decode and resample time it accounted for itself.
        inner = stats.decode_s + stats.resample_s - upstream
        return time.perf_counter() - tick - inner

    while True:
        upstream = stats.decode_s + stats.resample_s
        tick = time.perf_counter()
        item = next(items, None)
        if item is None:
            stats.window_s += windowing_time(tick, upstream)
            return
        if isinstance(item, SkippedWindow):
            stats.skipped.append(item)
            stats.window_s += windowing_time(tick, upstream)
            continue
        stats.windows += 1
        window = model_window(item, config.normalization)
        stats.window_s += windowing_time(tick, upstream)
        yield window
