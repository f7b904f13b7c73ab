"""Live audio: raw PCM frames of any size become model windows as they arrive.

A sensor's frames are cut wherever its buffer filled, so a frame may end inside a sample or
inside a window. The decoder carries partial samples to the next frame, and the resampler,
windower and normalisation are the very objects the file path streams through
(:mod:`sevensense.audio.pipeline`), carried between frames. A recording sent as frames
therefore gives the same windows as the same recording sent as a file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from sevensense.audio.bounds import check_source_rate
from sevensense.audio.encoding import SampleEncoding
from sevensense.audio.pipeline import PreprocessConfig, model_window
from sevensense.audio.resample import StreamResampler
from sevensense.audio.windowing import Padding, SkippedWindow, Window, Windower
from sevensense.errors import InvalidSamplesError

_DTYPES: dict[SampleEncoding, np.dtype[np.generic]] = {
    SampleEncoding.S16LE: np.dtype("<i2"),
    SampleEncoding.F32LE: np.dtype("<f4"),
}


@dataclass(frozen=True)
class PcmFormat:
    sample_rate: int
    channels: int
    encoding: SampleEncoding

    @property
    def frame_bytes(self) -> int:
        """Bytes of one sample on every channel."""
        return self.channels * int(_DTYPES[self.encoding].itemsize)


class PcmDecoder:
    """Bytes → mono float32, as the file decoder would give them.

    int16 is scaled by 1/32768 and channels are averaged, exactly as libsndfile and
    :func:`sevensense.audio.decode.iter_mono_blocks` do for a file, so frames and files
    agree bit for bit. ``frames`` counts samples per channel, the unit resumption uses."""

    def __init__(self, fmt: PcmFormat) -> None:
        self.format = fmt
        self.frames = 0
        self._carry = b""

    @property
    def pending_bytes(self) -> int:
        return len(self._carry)

    def drop_partial(self) -> int:
        """Forget a sample cut by a dropped connection: a resume sends it again whole."""
        dropped = len(self._carry)
        self._carry = b""
        return dropped

    def decode(self, data: bytes) -> np.ndarray:
        fmt = self.format
        buf = self._carry + data if self._carry else data
        usable = len(buf) - len(buf) % fmt.frame_bytes
        self._carry = bytes(buf[usable:])
        if usable == 0:
            return np.zeros(0, dtype=np.float32)
        count = usable // fmt.frame_bytes * fmt.channels
        raw = np.frombuffer(buf, dtype=_DTYPES[fmt.encoding], count=count)
        if fmt.encoding is SampleEncoding.S16LE:
            samples = raw.astype(np.float32) * np.float32(1.0 / 32768.0)
        else:
            samples = raw.astype(np.float32)
        block = samples.reshape(-1, fmt.channels)
        mono = block[:, 0] if fmt.channels == 1 else block.mean(axis=1, dtype=np.float32)
        if not np.isfinite(mono).all():
            bad = int(np.argmin(np.isfinite(mono)))
            at = self.frames + bad
            raise InvalidSamplesError(
                f"NaN or infinite sample at {at / fmt.sample_rate:.3f} s of the stream",
                sample_index=at,
            )
        self.frames += mono.shape[0]
        return np.ascontiguousarray(mono, dtype=np.float32)


# Input audio a restarted resampler needs before the first sample it must reproduce: soxr's
# filters at every quality level and resampy's kaiser_fast reach at most ~260 input samples
# (measured from 8 to 96 kHz); 50 ms is that with a margin at every supported rate.
RESAMPLER_LOOKBACK_S = 0.05


@dataclass(frozen=True)
class ResumePoint:
    """Where a stream rebuilt from the client's own audio restarts (a resume on another
    task): the client sends from ``input_offset``; the resampler restarts there, on an
    input sample whose model-rate time is whole (the filter phase of the uninterrupted
    stream), early enough that its output from ``keep_from`` equals the uninterrupted one."""

    input_offset: int  # per channel, at the stream's rate
    model_offset: int  # model-rate sample of the restarted resampler's first output
    keep_from: int  # model-rate sample the windower's buffer starts at
    next_index: int  # the window cut next
    covered_end: int  # model-rate end of the last window cut before (0: none)


def resume_point(in_rate: int, config: PreprocessConfig, next_index: int) -> ResumePoint:
    """The point to continue a stream whose windows before ``next_index`` are answered."""
    spec = config.window_spec()
    if next_index <= 0:
        return ResumePoint(0, 0, 0, 0, 0)
    start = next_index * spec.hop_samples
    covered_end = (next_index - 1) * spec.hop_samples + spec.window_samples
    keep = start
    if spec.padding is Padding.OVERLAP_FILL:  # its last window may reach back a whole window
        keep = max(0, start - spec.window_samples)
    out_rate = config.sample_rate
    if in_rate == out_rate:
        return ResumePoint(keep, keep, keep, next_index, covered_end)
    g = math.gcd(in_rate, out_rate)
    period_in, period_out = in_rate // g, out_rate // g
    wanted = keep * in_rate // out_rate - math.ceil(RESAMPLER_LOOKBACK_S * in_rate)
    periods = max(0, wanted) // period_in
    return ResumePoint(periods * period_in, periods * period_out, keep, next_index, covered_end)


@dataclass
class LiveWindows:
    """Mono blocks at the stream's rate → normalised model windows, as soon as each is whole.

    Memory is one window plus one block whatever the stream's length; skipped (silent)
    windows are returned beside the kept ones, never dropped."""

    in_rate: int
    config: PreprocessConfig
    _resampler: StreamResampler = field(init=False)
    _windower: Windower = field(init=False)
    finished: bool = field(default=False, init=False)
    _discard: int = field(default=0, init=False)  # resampled samples before a resume point
    _skip_in: int = field(default=0, init=False)  # input samples before this one's resume point

    def __post_init__(self) -> None:
        check_source_rate(self.in_rate, "stream")  # as a file at this rate would be
        self._resampler = StreamResampler(
            self.in_rate, self.config.sample_rate, self.config.resample_quality
        )
        self._windower = Windower(self.config.window_spec())

    @classmethod
    def resumed(
        cls, in_rate: int, config: PreprocessConfig, point: ResumePoint, fed_from: int | None = None
    ) -> LiveWindows:
        """Windows from ``point`` on, fed the stream's audio from ``fed_from`` (default
        ``point.input_offset``; earlier when another windower on the same audio, the
        verifier's, needs to start earlier)."""
        live = cls(in_rate, config)
        start = point.input_offset if fed_from is None else fed_from
        if start > point.input_offset:
            raise ValueError(f"fed from {start}, after the resume point {point.input_offset}")
        live._skip_in = point.input_offset - start
        w = live._windower
        w.buf_start = w.total = point.keep_from
        w.next_start = point.next_index * w.spec.hop_samples
        w.index = point.next_index
        w.covered_end = point.covered_end
        live._discard = point.keep_from - point.model_offset
        return live

    @property
    def model_samples(self) -> int:
        """Samples at the model's rate received so far."""
        return self._windower.total

    @property
    def next_index(self) -> int:
        """Index the next window cut (kept or skipped) will have."""
        return self._windower.index

    def push(self, mono: np.ndarray) -> tuple[list[Window], list[SkippedWindow]]:
        if self.finished:
            raise RuntimeError("the stream was finished")
        if self._skip_in and mono.size:
            cut = min(self._skip_in, mono.size)
            self._skip_in -= cut
            mono = mono[cut:]
        out = self._trim(self._resampler.process(mono) if mono.size else mono)
        if not out.size:
            return [], []
        return self._split(list(self._windower.push(out)))

    def _trim(self, out: np.ndarray) -> np.ndarray:
        if self._discard and out.size:
            cut = min(self._discard, out.size)
            self._discard -= cut
            return out[cut:]
        return out

    def finish(self) -> tuple[list[Window], list[SkippedWindow]]:
        """The resampler's tail and the last, padded window, per the padding strategy."""
        if self.finished:
            return [], []
        self.finished = True
        tail = self._trim(self._resampler.flush())
        items = list(self._windower.push(tail)) if tail.size else []
        items.extend(self._windower.finish())
        return self._split(items)

    def _split(
        self, items: list[Window | SkippedWindow]
    ) -> tuple[list[Window], list[SkippedWindow]]:
        norm = self.config.normalization
        kept = [model_window(w, norm) for w in items if isinstance(w, Window)]
        skipped = [s for s in items if isinstance(s, SkippedWindow)]
        return kept, skipped
