"""BirdNET-Analyzer's resampling, streamed: resampy's ``kaiser_fast`` as ``librosa.load``
calls it, bit for bit, in bounded memory.

BirdNET-Analyzer 2.4.0 loads audio with ``librosa.load(sr=48000, res_type="kaiser_fast")``,
which runs ``resampy.resample(filter="kaiser_fast")`` on the whole file and pads the result
with zeros to ``ceil(frames * ratio)`` samples. On a 32 kHz clip that filter changes the
detections themselves against soxr HQ, so wherever a caller asks for BirdNET-Analyzer's
results the platform resamples as it does.

resampy has no streaming interface, so this class calls resampy's own kernel
(``resampy.interpn.resample_f_s``) on a buffer that holds each output sample's filter
support. Output ``t`` sits at input time ``t / ratio`` (float64, as resampy computes it);
the buffer's first input index is an integer, so subtracting it is exact and every output
sample is computed from the same operands, in the same order, as the one-shot call.

BirdNET-Analyzer also reads a long file in pieces of ``FILE_SPLITTING_DURATION`` (600 s)
and resamples each piece on its own (each with resampy's zero edges); ``piece_frames``
restarts the stream at those input frames so that long recordings match too.
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np

FILTER: Final = "kaiser_fast"
FILE_SPLITTING_S: Final = 600  # birdnet_analyzer.config.FILE_SPLITTING_DURATION


class _Kernel:
    """resampy's filter tables for one rate pair, prepared as ``resampy.resample`` does."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        from resampy.filters import get_filter

        self.ratio = float(out_rate) / in_rate
        self.float_ratio = float(out_rate) / float(in_rate)
        win, precision, _ = get_filter(FILTER)
        if self.ratio < 1:
            win = self.ratio * win
        self.win = win
        self.delta = np.diff(win, append=win[-1])
        self.precision = precision
        self.scale = min(1.0, self.ratio)
        self.time_increment = 1.0 / self.ratio
        # Input samples either side of an output sample that its filter can reach.
        self.reach = len(win) // max(1, int(self.scale * precision)) + 2

    def run(self, x: np.ndarray, t_local: np.ndarray) -> np.ndarray:
        from resampy.interpn import resample_f_s

        y = np.zeros(t_local.shape[0], dtype=np.float32)
        kernel: Any = resample_f_s
        kernel(x, t_local, self.win, self.delta, self.precision, self.scale, y)
        return y


class KaiserFastStream:
    """Block-wise resampler whose concatenated output equals BirdNET-Analyzer's
    ``librosa.load(..., res_type="kaiser_fast")`` of the same samples."""

    def __init__(self, in_rate: int, out_rate: int, piece_frames: int | None = None) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._kernel = _Kernel(in_rate, out_rate) if in_rate != out_rate else None
        self.piece_frames = piece_frames if piece_frames is not None else FILE_SPLITTING_S * in_rate
        self._reset()

    def _reset(self) -> None:
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # piece-relative input index of _buf[0]
        self._seen = 0  # input frames of this piece so far
        self._next = 0  # next output index of this piece

    def _emit(self, t_end: int) -> np.ndarray:
        kernel = self._kernel
        assert kernel is not None
        if t_end <= self._next:
            return np.zeros(0, dtype=np.float32)
        t_out = np.arange(self._next, t_end) * kernel.time_increment
        y = kernel.run(self._buf, t_out - self._buf_start)
        self._next = t_end
        return y

    def _ready(self) -> int:
        """Outputs whose right-hand filter support is all in the buffer."""
        assert self._kernel is not None
        limit = self._seen - self._kernel.reach
        if limit <= 0:
            return self._next
        t = max(self._next, math.floor(limit * self._kernel.ratio))
        while t > self._next and int(t * self._kernel.time_increment) >= limit:
            t -= 1
        return t

    def _trim(self) -> None:
        assert self._kernel is not None
        keep = int(self._next * self._kernel.time_increment) - self._kernel.reach
        drop = keep - self._buf_start
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf_start = keep

    def _finish_piece(self) -> np.ndarray:
        """The rest of a piece: resampy's ``int(n * ratio)`` outputs, then librosa's zeros
        up to ``ceil(n * ratio)``."""
        assert self._kernel is not None
        n = self._seen
        y = self._emit(int(n * self._kernel.float_ratio))
        padded = int(np.ceil(n * self._kernel.ratio))
        if padded > self._next:
            y = np.concatenate((y, np.zeros(padded - self._next, dtype=np.float32)))
        self._reset()
        return y

    def process(self, block: np.ndarray) -> np.ndarray:
        if self._kernel is None:
            return block
        out: list[np.ndarray] = []
        block = np.asarray(block, dtype=np.float32)
        while block.size:
            room = self.piece_frames - self._seen
            part, block = block[:room], block[room:]
            self._buf = np.concatenate((self._buf, part)) if self._buf.size else part.copy()
            self._seen += part.shape[0]
            if self._seen == self.piece_frames:
                out.append(self._finish_piece())
                continue
            out.append(self._emit(self._ready()))
            self._trim()
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def flush(self) -> np.ndarray:
        if self._kernel is None or self._seen == 0:
            return np.zeros(0, dtype=np.float32)
        return self._finish_piece()
