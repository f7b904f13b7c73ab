"""Fixed-length model windows from a stream of mono blocks, with hop, padding and gating.

Full windows start at 0, hop, 2·hop, … while they fit. What happens at the end is the
padding strategy's business (ADR-007 §1.2):

- ``zero_pad``: one more window at the next hop, the missing tail filled with zeros;
- ``reflect``: the same window, the tail filled by reflecting the audio;
- ``discard``: the uncovered tail is dropped and reported as a skipped window
  (Perch/hoplite behaviour);
- ``overlap_fill``: one more window aligned to end exactly at the last sample, overlapping
  its predecessor more than the hop.

A recording shorter than one window always yields one window: zero-padded at the end for
``zero_pad``/``overlap_fill``, reflected for ``reflect``, centre-padded for ``discard``
(again as hoplite does). ``min_tail_samples`` adds BirdNET-Analyzer's segment rule
(``split_signal``): a zero-padded last window with fewer real samples is dropped (reported
as skipped, ``short_tail``), so a recording under 1 s gives no window at all. Windows
whose mean-square energy is below the threshold are not sent to the model but reported as
skipped with their times, never silently lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum

import numpy as np


class Padding(StrEnum):
    ZERO_PAD = "zero_pad"
    REFLECT = "reflect"
    DISCARD = "discard"
    OVERLAP_FILL = "overlap_fill"


@dataclass(frozen=True)
class WindowSpec:
    window_samples: int
    hop_samples: int
    sample_rate: int
    padding: Padding = Padding.ZERO_PAD
    energy_threshold: float = 0.0
    min_tail_samples: int = 0

    def __post_init__(self) -> None:
        if self.window_samples <= 0 or self.sample_rate <= 0:
            raise ValueError("window_samples and sample_rate must be positive")
        if not 0 < self.hop_samples <= self.window_samples:
            raise ValueError(
                f"hop must be in (0, window]; got hop={self.hop_samples}, "
                f"window={self.window_samples}"
            )
        object.__setattr__(self, "padding", Padding(self.padding))

    @classmethod
    def from_overlap(
        cls,
        window_samples: int,
        sample_rate: int,
        overlap: float,
        padding: Padding | str = Padding.ZERO_PAD,
        energy_threshold: float = 0.0,
        min_tail_samples: int = 0,
    ) -> WindowSpec:
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1); got {overlap}")
        hop = max(1, round(window_samples * (1.0 - overlap)))
        return cls(
            window_samples, hop, sample_rate, Padding(padding), energy_threshold, min_tail_samples
        )

    def keeps_tail(self, total: int, tail: int) -> bool:
        """BirdNET-Analyzer's rule for the last, zero-padded window (``tail`` real samples of
        ``total``), with its float arithmetic: a recording shorter than a window whose
        ``int()`` start rounds below zero keeps its window whatever its length."""
        if tail >= self.min_tail_samples:
            return True
        w, hop = self.window_samples, self.hop_samples
        return tail == total and int((total - w + hop - 1) / hop) < 0


@dataclass(frozen=True)
class Window:
    index: int
    start_sample: int
    samples: np.ndarray
    sample_rate: int
    valid_samples: int
    fill: str | None = None

    @property
    def start_s(self) -> float:
        return self.start_sample / self.sample_rate

    @property
    def end_s(self) -> float:
        return (self.start_sample + self.valid_samples) / self.sample_rate

    @property
    def padded_samples(self) -> int:
        return int(self.samples.shape[0]) - self.valid_samples


@dataclass(frozen=True)
class SkippedWindow:
    index: int
    start_s: float
    end_s: float
    reason: str
    energy: float | None = None


def _energy(samples: np.ndarray) -> float:
    return float(np.mean(np.square(samples, dtype=np.float64))) if samples.size else 0.0


def _pad(segment: np.ndarray, width: int, mode: str) -> np.ndarray:
    missing = width - segment.shape[0]
    if missing <= 0:
        return segment[:width].copy()
    if mode == "reflect" and segment.shape[0] >= 2:
        return np.pad(segment, (0, missing), mode="reflect")
    if mode == "centre":
        left = missing // 2
        return np.pad(segment, (left, missing - left))
    return np.pad(segment, (0, missing))


class Windower:
    """The windowing state carried between blocks: at most one window plus one block."""

    def __init__(self, spec: WindowSpec) -> None:
        self.spec = spec
        self.buf = np.zeros(0, dtype=np.float32)
        self.buf_start = 0
        self.total = 0
        self.next_start = 0
        self.covered_end = 0
        self.index = 0

    def _emit(
        self, start: int, segment: np.ndarray, valid: int, fill: str | None
    ) -> Window | SkippedWindow:
        spec = self.spec
        index = self.index
        self.index += 1
        energy = _energy(segment[:valid]) if fill != "centre" else _energy(segment)
        end = start + valid
        if spec.energy_threshold > 0.0 and energy < spec.energy_threshold:
            return SkippedWindow(
                index, start / spec.sample_rate, end / spec.sample_rate, "silent", energy
            )
        return Window(index, start, segment, spec.sample_rate, valid, fill)

    def push(self, block: np.ndarray) -> Iterator[Window | SkippedWindow]:
        w, hop = self.spec.window_samples, self.spec.hop_samples
        self.buf = np.concatenate((self.buf, block)) if self.buf.size else block.copy()
        self.total += block.shape[0]
        while self.next_start + w <= self.total:
            off = self.next_start - self.buf_start
            yield self._emit(self.next_start, self.buf[off : off + w].copy(), w, None)
            self.covered_end = self.next_start + w
            self.next_start += hop
        keep_from = self.next_start
        if self.spec.padding is Padding.OVERLAP_FILL:
            keep_from = min(keep_from, max(self.total - w, 0))
        drop = keep_from - self.buf_start
        if drop > 0:
            self.buf = self.buf[drop:]
            self.buf_start = keep_from

    def padding_drops_tail(self, tail: int) -> bool:
        spec = self.spec
        if not spec.min_tail_samples or spec.padding is not Padding.ZERO_PAD:
            return False
        return 0 < tail < spec.window_samples and not spec.keeps_tail(self.total, tail)

    def finish(self) -> Iterator[Window | SkippedWindow]:
        spec, w, n = self.spec, self.spec.window_samples, self.total
        if n == 0:
            return
        tail = self.buf[self.next_start - self.buf_start :]
        if self.covered_end and self.covered_end >= n:
            return
        if self.padding_drops_tail(n - self.next_start if self.covered_end else n):
            self.index += 1
            yield SkippedWindow(
                self.index - 1,
                self.next_start / spec.sample_rate,
                n / spec.sample_rate,
                "short_tail",
            )
            return
        if self.covered_end == 0:
            mode = {
                Padding.ZERO_PAD: "zero",
                Padding.REFLECT: "reflect",
                Padding.DISCARD: "centre",
                Padding.OVERLAP_FILL: "zero",
            }[spec.padding]
            # Times stay those of the real audio, whatever side the padding went to.
            yield self._emit(0, _pad(self.buf[:n], w, mode), n, mode)
            return
        if spec.padding is Padding.DISCARD:
            self.index += 1
            yield SkippedWindow(
                self.index - 1,
                self.next_start / spec.sample_rate,
                n / spec.sample_rate,
                "trailing_partial",
            )
        elif spec.padding is Padding.OVERLAP_FILL:
            start = n - w
            off = start - self.buf_start
            yield self._emit(start, self.buf[off : off + w].copy(), w, "overlap")
        else:
            mode = "reflect" if spec.padding is Padding.REFLECT else "zero"
            yield self._emit(self.next_start, _pad(tail, w, mode), tail.shape[0], mode)


def iter_windows(
    blocks: Iterable[np.ndarray], spec: WindowSpec
) -> Iterator[Window | SkippedWindow]:
    """Stream windows; memory holds at most one window plus one block of samples."""
    windower = Windower(spec)
    for block in blocks:
        if block.size:
            yield from windower.push(block)
    yield from windower.finish()
