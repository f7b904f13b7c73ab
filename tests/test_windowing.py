"""Windowing: hop/overlap, the four padding strategies, short clips, silence gating."""

from __future__ import annotations

import numpy as np
import pytest

from sevensense.audio.windowing import Padding, SkippedWindow, Window, WindowSpec, iter_windows

W, SR = 100, 10  # 10-s windows at 10 Hz keep the arithmetic readable


def run(n: int, spec: WindowSpec, block: int = 37) -> list[Window | SkippedWindow]:
    x = np.arange(1, n + 1, dtype=np.float32)
    return list(iter_windows((x[i : i + block] for i in range(0, n, block)), spec))


def windows(items: list[Window | SkippedWindow]) -> list[Window]:
    return [w for w in items if isinstance(w, Window)]


@pytest.mark.parametrize(("overlap", "hop"), [(0.0, 100), (0.25, 75), (0.5, 50), (0.75, 25)])
def test_overlap_sets_the_hop_and_window_times(overlap: float, hop: int) -> None:
    spec = WindowSpec.from_overlap(W, SR, overlap, Padding.DISCARD)
    assert spec.hop_samples == hop
    ws = windows(run(400, spec))
    assert [w.start_sample for w in ws] == list(range(0, 400 - W + 1, hop))
    for w in ws:
        assert w.samples.shape == (W,)
        assert w.samples[0] == w.start_sample + 1  # sample values are their own 1-based index
        assert w.end_s - w.start_s == pytest.approx(W / SR)


def test_zero_pad_adds_one_padded_trailing_window() -> None:
    items = run(250, WindowSpec(W, 100, SR, Padding.ZERO_PAD))
    ws = windows(items)
    assert [w.start_sample for w in ws] == [0, 100, 200]
    last = ws[-1]
    assert last.valid_samples == 50 and last.padded_samples == 50
    assert np.all(last.samples[50:] == 0) and last.samples[49] == 250
    assert (last.start_s, last.end_s) == (20.0, 25.0)


def test_reflect_mirrors_the_tail() -> None:
    last = windows(run(250, WindowSpec(W, 100, SR, Padding.REFLECT)))[-1]
    assert last.samples[49] == 250 and last.samples[50] == 249 and last.samples[51] == 248


def test_discard_drops_the_tail_but_reports_it() -> None:
    items = run(250, WindowSpec(W, 100, SR, Padding.DISCARD))
    assert [w.start_sample for w in windows(items)] == [0, 100]
    skipped = [s for s in items if isinstance(s, SkippedWindow)]
    assert len(skipped) == 1
    assert (skipped[0].start_s, skipped[0].end_s, skipped[0].reason) == (
        20.0,
        25.0,
        "trailing_partial",
    )


def test_overlap_fill_ends_exactly_at_the_last_sample() -> None:
    ws = windows(run(250, WindowSpec(W, 100, SR, Padding.OVERLAP_FILL), block=7))
    assert [w.start_sample for w in ws] == [0, 100, 150]
    assert ws[-1].samples[-1] == 250 and ws[-1].padded_samples == 0


def test_exact_multiple_needs_no_trailing_window() -> None:
    for padding in Padding:
        items = run(300, WindowSpec(W, 100, SR, padding))
        assert [w.start_sample for w in windows(items)] == [0, 100, 200]
        assert not [s for s in items if isinstance(s, SkippedWindow)]


@pytest.mark.parametrize(
    ("padding", "first_real"),
    [(Padding.ZERO_PAD, 0), (Padding.OVERLAP_FILL, 0), (Padding.DISCARD, 35), (Padding.REFLECT, 0)],
)
def test_short_clip_always_gives_one_window(padding: Padding, first_real: int) -> None:
    (w,) = run(30, WindowSpec(W, 50, SR, padding))
    assert isinstance(w, Window)
    assert w.samples.shape == (W,) and w.valid_samples == 30
    assert w.samples[first_real] == 1  # discard centre-pads (35 zeros on the left)
    assert (w.start_s, w.end_s) == (0.0, 3.0)
    if padding is Padding.REFLECT:
        assert w.samples[30] == 29


def test_energy_threshold_skips_silent_windows_and_reports_times() -> None:
    x = np.concatenate(
        [np.zeros(200, np.float32), np.ones(100, np.float32), np.zeros(100, np.float32)]
    )
    spec = WindowSpec(W, 100, SR, Padding.DISCARD, energy_threshold=1e-6)
    items = list(iter_windows([x], spec))
    assert [type(i).__name__ for i in items] == [
        "SkippedWindow",
        "SkippedWindow",
        "Window",
        "SkippedWindow",
    ]
    silent = [i for i in items if isinstance(i, SkippedWindow)]
    assert [(s.start_s, s.end_s) for s in silent] == [(0.0, 10.0), (10.0, 20.0), (30.0, 40.0)]
    assert all(s.reason == "silent" and s.energy == 0.0 for s in silent)
    assert [i.index for i in items] == [0, 1, 2, 3]


def test_block_size_never_changes_the_windows() -> None:
    spec = WindowSpec(W, 30, SR, Padding.OVERLAP_FILL)
    ref = windows(run(1234, spec, block=1234))
    for block in (1, 13, 99, 500):
        got = windows(run(1234, spec, block=block))
        assert [w.start_sample for w in got] == [w.start_sample for w in ref]
        assert all(np.array_equal(a.samples, b.samples) for a, b in zip(got, ref, strict=True))


def test_buffer_stays_bounded_while_streaming() -> None:
    from sevensense.audio.windowing import Windower

    windower = Windower(WindowSpec(W, 50, SR))
    block = np.ones(64, np.float32)
    for _ in range(10_000):
        list(windower.push(block))
        assert windower.buf.shape[0] <= W + 64


def test_invalid_specs_are_refused() -> None:
    with pytest.raises(ValueError, match="hop"):
        WindowSpec(W, 0, SR)
    with pytest.raises(ValueError, match="hop"):
        WindowSpec(W, W + 1, SR)
    with pytest.raises(ValueError, match="overlap"):
        WindowSpec.from_overlap(W, SR, 1.0)


# --- BirdNET-Analyzer's segment rule (split_signal: a last segment under 1 s is dropped) --


def _birdnet_windows(n: int, hop: int = 144_000) -> list[Window | SkippedWindow]:
    spec = WindowSpec(144_000, hop, 48_000, Padding.ZERO_PAD, min_tail_samples=48_000)
    return list(iter_windows([np.ones(n, dtype=np.float32)], spec))


def _kept(items: list[Window | SkippedWindow]) -> list[tuple[float, float]]:
    return [(w.start_s, w.end_s) for w in items if isinstance(w, Window)]


def test_birdnet_rule_drops_a_short_last_segment() -> None:
    items = _birdnet_windows(int(3.94 * 48_000))
    assert _kept(items) == [(0.0, 3.0)]
    skipped = [w for w in items if isinstance(w, SkippedWindow)]
    assert [(s.start_s, s.reason) for s in skipped] == [(3.0, "short_tail")]
    assert _kept(_birdnet_windows(4 * 48_000)) == [(0.0, 3.0), (3.0, 4.0)]  # exactly 1 s: kept


def test_birdnet_rule_gives_no_window_for_a_recording_under_a_second() -> None:
    items = _birdnet_windows(int(0.93 * 48_000))
    assert _kept(items) == []
    assert [w.reason for w in items if isinstance(w, SkippedWindow)] == ["short_tail"]
    assert _kept(_birdnet_windows(48_000)) == [(0.0, 1.0)]


def test_birdnet_rule_keeps_short_recordings_when_its_start_rounds_below_zero() -> None:
    # split_signal's int((n - chunk + step - 1) / step) is negative only for a step of at
    # most half a window (overlap >= 1.5 s); then the short recording keeps its window.
    assert _kept(_birdnet_windows(int(0.5 * 48_000), hop=48_000)) == [(0.0, 0.5)]
    assert _kept(_birdnet_windows(int(0.5 * 48_000), hop=96_000)) == []


def test_birdnet_rule_with_overlap_only_touches_the_last_segment() -> None:
    assert _kept(_birdnet_windows(int(5.2 * 48_000), hop=72_000)) == [
        (0.0, 3.0),
        (1.5, 4.5),
        (3.0, 5.2),
    ]
    assert _kept(_birdnet_windows(int(5.8 * 48_000), hop=120_000)) == [(0.0, 3.0), (2.5, 5.5)]
