"""Which BirdNET windows speak for a primary window, and how their scores combine.

BirdNET hears 3-s windows at 48 kHz, Perch 5-s windows at 32 kHz (hop 2.5 s by default):
the two grids never line up. For a primary window spanning [s, e] (its nominal extent,
``start + window length``, padding included) the BirdNET windows counted are those whose
centre lies in [s, e], both ends included, pooled by the maximum per class.

Why the centre: a BirdNET window whose centre lies inside [s, e] has at least half of its
3 s inside the primary window, so it heard mostly the same sound; a window merely touching
the edge would bring in calls the primary model never heard. Every 3-s hop has its centre
somewhere, so a 5-s window always gets one or two BirdNET windows, and none is dropped.
Why the maximum: a species calling once in 5 s is present in the window; averaging with a
neighbouring BirdNET window that missed the call would halve its score and call it absent.
Nothing here does I/O: times and arrays in, indices and arrays out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def centre_s(start_s: float, window_s: float) -> float:
    return start_s + window_s / 2.0


def in_span(centre: float, start_s: float, end_s: float, eps: float = 1e-9) -> bool:
    return start_s - eps <= centre <= end_s + eps


def assign(
    primary: Sequence[tuple[float, float]], verifier_centres: Sequence[float]
) -> list[list[int]]:
    """For each primary span (start, end), the indices of the verifier windows centred in it."""
    return [
        [j for j, c in enumerate(verifier_centres) if in_span(c, start, end)]
        for start, end in primary
    ]


def max_pool(scores: Sequence[np.ndarray]) -> np.ndarray | None:
    """Per-class maximum of several windows' scores; None for no window."""
    if not scores:
        return None
    pooled: np.ndarray = np.max(np.stack(scores), axis=0)
    return pooled


@dataclass
class _Scored:
    index: int
    centre: float
    scores: np.ndarray


class Aligner:
    """Streaming form of :func:`assign` + :func:`max_pool` for recordings of any length.

    Verifier windows are added in time order; a primary span asks for its pooled scores;
    windows centred before a span's start are forgotten once that span is served (later
    spans start no earlier), so memory holds only the windows around the current span."""

    def __init__(self, verifier_window_s: float) -> None:
        self.window_s = verifier_window_s
        self._held: list[_Scored] = []
        self._forgotten = -1  # verifier windows come in index order; these are done with

    def add(self, index: int, start_s: float, scores: np.ndarray) -> None:
        if not self.has(index):
            self._held.append(_Scored(index, centre_s(start_s, self.window_s), scores))

    def has(self, index: int) -> bool:
        return index <= self._forgotten or any(h.index == index for h in self._held)

    def take(self, start_s: float, end_s: float) -> tuple[np.ndarray | None, list[int]]:
        """Pooled scores of the verifier windows centred in [start_s, end_s], and which."""
        chosen = [h for h in self._held if in_span(h.centre, start_s, end_s)]
        for h in self._held:
            if h.centre < start_s - 1e-9:
                self._forgotten = max(self._forgotten, h.index)
        self._held = [h for h in self._held if h.index > self._forgotten]
        return max_pool([h.scores for h in chosen]), [h.index for h in chosen]

    def __len__(self) -> int:
        return len(self._held)
