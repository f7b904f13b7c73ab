"""Sample-rate conversion, streaming so a file is never held whole.

ADR-007 names four quality levels; they map onto soxr's presets as follows. soxr has no
plain linear interpolator, so Linear takes its quickest (cubic) preset. A fifth,
``kaiser_fast``, is BirdNET-Analyzer's own resampling (resampy, :mod:`.kaiser_fast`), used
where a caller asks for BirdNET-Analyzer's results.

| level       | library | preset / filter | description                          |
|-------------|---------|-----------------|--------------------------------------|
| linear      | soxr    | QQ              | quick, cubic interpolation           |
| medium      | soxr    | MQ              | medium quality                       |
| high        | soxr    | HQ              | high quality (the default)           |
| audiophile  | soxr    | VHQ             | very high quality                    |
| kaiser_fast | resampy | kaiser_fast     | BirdNET-Analyzer 2.4.0's (librosa's) |
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import soxr

from sevensense.audio.bounds import check_ratio
from sevensense.audio.kaiser_fast import KaiserFastStream
from sevensense.audio.quality_levels import BIRDNET_ANALYZER, soxr_preset


def output_length(input_frames: int, in_rate: int, out_rate: int) -> int:
    """The exact number of samples soxr yields for a whole input (round half up)."""
    return (input_frames * out_rate + in_rate // 2) // in_rate


class StreamResampler:
    """Block-wise resampler whose concatenated output equals one-shot ``soxr.resample``."""

    def __init__(self, in_rate: int, out_rate: int, quality: str = "high") -> None:
        check_ratio(in_rate, out_rate)  # output per input sample stays bounded
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._passthrough = in_rate == out_rate
        self._kaiser: KaiserFastStream | None = None
        self._stream = None
        if quality == BIRDNET_ANALYZER:
            self._kaiser = None if self._passthrough else KaiserFastStream(in_rate, out_rate)
        elif not self._passthrough:
            self._stream = soxr.ResampleStream(
                in_rate, out_rate, 1, dtype="float32", quality=soxr_preset(quality)
            )
        else:
            soxr_preset(quality)

    def process(self, block: np.ndarray) -> np.ndarray:
        if self._kaiser is not None:
            return self._kaiser.process(block)
        if self._stream is None:
            return block
        return np.asarray(self._stream.resample_chunk(block), dtype=np.float32)

    def flush(self) -> np.ndarray:
        if self._kaiser is not None:
            return self._kaiser.flush()
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(
            self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True),
            dtype=np.float32,
        )


def resample_blocks(
    blocks: Iterable[np.ndarray], in_rate: int, out_rate: int, quality: str = "high"
) -> Iterator[np.ndarray]:
    stream = StreamResampler(in_rate, out_rate, quality)
    for block in blocks:
        out = stream.process(block)
        if out.size:
            yield out
    tail = stream.flush()
    if tail.size:
        yield tail


def resample(audio: np.ndarray, in_rate: int, out_rate: int, quality: str = "high") -> np.ndarray:
    """Whole-array convenience for short clips and tests."""
    if in_rate == out_rate:
        return audio.astype(np.float32, copy=False)
    if quality == BIRDNET_ANALYZER:
        stream = KaiserFastStream(in_rate, out_rate)
        return np.concatenate((stream.process(audio), stream.flush()))
    return np.asarray(
        soxr.resample(
            audio.astype(np.float32, copy=False), in_rate, out_rate, soxr_preset(quality)
        ),
        dtype=np.float32,
    )
