"""Call density: how often each class is detected per recording, and per site and day,
counted from the applied scores (a window scoring at or over the threshold is one
detection) and divided by the hours the scored windows cover."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa

from sevensense.index.annotations import IndexedWindow

# One row of the per-recording table, and its site/day roll-up (no recording column).
RECORDING_COLUMNS = ("recording_id", "site", "day", "label", "detections", "hours", "per_hour")
SITE_DAY_COLUMNS = ("site", "day", "label", "recordings", "detections", "hours", "per_hour")


@dataclass(frozen=True)
class Where:
    """A recording's site and start time, as the index holds them (either may be unknown)."""

    site: str | None
    time: datetime | None


def day_of(where: Where, start_s: float) -> str | None:
    """The UTC date a window starts on: a recording past midnight counts on both days."""
    if where.time is None:
        return None
    return (where.time + timedelta(seconds=start_s)).date().isoformat()


def covered_hours(spans: list[tuple[float, float]]) -> float:
    """Hours in the union of the spans: overlapping windows count once."""
    total = 0.0
    end = -np.inf
    for s, e in sorted(spans):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total / 3600.0


@dataclass
class DensityCounter:
    """Counts per (recording, day, class) as score blocks arrive; holds one counter per
    key and the windows' spans (metadata the caller already holds), not the scores."""

    classes: tuple[str, ...]
    threshold: float
    where: dict[str, Where]
    counts: dict[tuple[str, str | None], np.ndarray] = field(default_factory=dict)
    spans: dict[tuple[str, str | None], list[tuple[float, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def add(self, windows: Sequence[IndexedWindow], scores: np.ndarray) -> None:
        hits = scores >= self.threshold
        for w, row in zip(windows, hits, strict=True):
            key = (w.recording_id, day_of(self._where(w.recording_id), w.start_s))
            if key not in self.counts:
                self.counts[key] = np.zeros(len(self.classes), np.int64)
            self.counts[key] += row
            self.spans[key].append((w.start_s, w.end_s))

    def _where(self, recording_id: str) -> Where:
        return self.where.get(recording_id, Where(None, None))

    def per_recording(self) -> pa.Table:
        rows: list[tuple[object, ...]] = []
        for (rid, day), counts in sorted(self.counts.items(), key=lambda kv: str(kv[0])):
            hours = covered_hours(self.spans[(rid, day)])
            site = self._where(rid).site
            for label, n in zip(self.classes, counts, strict=True):
                rows.append((rid, site, day, label, int(n), hours, _rate(int(n), hours)))
        return _table(RECORDING_COLUMNS, rows)

    def per_site_day(self) -> pa.Table:
        sums: dict[tuple[str | None, str | None], tuple[set[str], np.ndarray, float]] = {}
        for (rid, day), counts in self.counts.items():
            key = (self._where(rid).site, day)
            zero = (set[str](), np.zeros(len(self.classes), np.int64), 0.0)
            recs, total, hours = sums.get(key, zero)
            more = covered_hours(self.spans[(rid, day)])
            sums[key] = (recs | {rid}, total + counts, hours + more)
        rows: list[tuple[object, ...]] = []
        for (site, day), (recs, total, hours) in sorted(sums.items(), key=lambda kv: str(kv[0])):
            for label, n in zip(self.classes, total, strict=True):
                rows.append((site, day, label, len(recs), int(n), hours, _rate(int(n), hours)))
        return _table(SITE_DAY_COLUMNS, rows)


def _rate(n: int, hours: float) -> float | None:
    return n / hours if hours > 0 else None


def _table(columns: tuple[str, ...], rows: list[tuple[object, ...]]) -> pa.Table:
    types = {
        "detections": pa.int64(),
        "recordings": pa.int64(),
        "hours": pa.float64(),
        "per_hour": pa.float64(),
    }
    arrays = {
        c: pa.array([r[i] for r in rows], types.get(c, pa.string())) for i, c in enumerate(columns)
    }
    return pa.table(arrays)
