"""One decode, two models' windows: the primary's and BirdNET's, streamed in step.

The decoded mono blocks are split with ``itertools.tee`` into two resample → window chains
(:func:`sevensense.audio.pipeline.prepare_windows`), one at the primary model's rate and
one at 48 kHz for BirdNET, so BirdNET hears the source, not the primary's 32-kHz stream.
The BirdNET chain is pulled along as the primary one decodes (never more than a block
behind), and BirdNET windows no future primary window can claim are dropped at once: what
is held stays a few windows whatever the recording's length, even across long stretches of
silence that the primary chain skips.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import deque
from collections.abc import Iterator

import numpy as np

from sevensense.audio.decode import AudioInfo, AudioSource, iter_mono_blocks
from sevensense.audio.pipeline import PreprocessConfig, StreamStats, prepare_windows
from sevensense.audio.windowing import Window
from sevensense.verification.alignment import centre_s, in_span


def _energy(w: Window) -> float:
    """The windower's silence measure (mean square of the real audio; BirdNET's windows are
    not normalised, so their samples are the windower's)."""
    samples = w.samples if w.fill == "centre" else w.samples[: w.valid_samples]
    return float(np.mean(np.square(samples, dtype=np.float64))) if samples.size else 0.0


def paired_windows(
    source: AudioSource,
    primary: PreprocessConfig,
    verifier: PreprocessConfig,
    primary_stats: StreamStats,
    verifier_stats: StreamStats,
) -> Iterator[tuple[Window, list[Window]]]:
    """Each primary window with the verifier windows centred in its nominal extent
    ``[start, start + window]`` (a verifier window may serve two overlapping windows)."""
    p_window_s = primary.window_samples / primary.sample_rate
    v_window_s = verifier.window_samples / verifier.sample_rate
    decoded_a, decoded_b = itertools.tee(
        iter_mono_blocks(source, primary.block_frames, primary.max_duration_s)
    )
    # The BirdNET chain gates silence here, not in its windower: a windower skipping a long
    # silence would read through it in one step, and the tee would buffer all of it for the
    # primary chain.
    gate = verifier.energy_threshold
    ungated = dataclasses.replace(verifier, energy_threshold=0.0)
    v_windows = prepare_windows(source, ungated, verifier_stats, decoded_b)
    held: deque[Window] = deque()
    v_done = False
    v_reached = float("-inf")  # centre of the last BirdNET window pulled, kept or not
    frames = 0
    rate = 1

    def centre(w: Window) -> float:
        return centre_s(w.start_s, v_window_s)

    def pull_verifier() -> bool:
        nonlocal v_done, v_reached
        if v_done:
            return False
        w = next(v_windows, None)
        if w is None:
            v_done = True
            return False
        v_reached = centre(w)
        if gate <= 0.0 or _energy(w) >= gate:
            held.append(w)
        return True

    def primary_blocks() -> Iterator[tuple[AudioInfo, np.ndarray]]:
        nonlocal frames, rate
        for info, block in decoded_a:
            frames += block.shape[0]
            rate = info.sample_rate
            yield info, block
            # Keep the verifier chain level with the decode, dropping what no later primary
            # window can reach (those start after frames/rate − window).
            while verifier_stats.input_frames < frames and pull_verifier():
                floor = frames / rate - p_window_s - v_window_s
                while held and centre(held[0]) < floor:
                    held.popleft()

    for w in prepare_windows(source, primary, primary_stats, primary_blocks()):
        start, end = w.start_s, w.start_s + p_window_s
        while v_reached <= end and pull_verifier():
            pass
        while held and centre(held[0]) < start - 1e-9:
            held.popleft()
        yield w, [v for v in held if in_span(centre(v), start, end)]
