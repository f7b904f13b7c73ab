"""The embedding-quality monitor (ADR-007 §6.1): is a model version still producing sane
embeddings, judged from what it produces in this process?

Per model version (name, version, variant) it keeps rolling windows of the raw embedding
norm (before L2 normalisation: after it every norm is 1 and says nothing) and of cosine
distances between each new embedding and a few sampled recent ones. A window is
``anomalous_norm`` when its raw norm lies more than ``anomaly_threshold`` standard
deviations from the rolling mean, once ``min_history`` norms have been seen, as the ADR's
``is_anomalous`` does. Everything stays in fixed-size ring buffers, so memory does not grow
with traffic, and every face (HTTP, CLI, worker) reports the same numbers.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterable, Sequence

import numpy as np
from pydantic import BaseModel, Field

from sevensense.artifacts.manifest import ModelIdentity
from sevensense.inference.engine import WindowResult
from sevensense.settings import QualitySettings

PERCENTILES = (5, 25, 50, 75, 95)


class Percentiles(BaseModel):
    p5: float
    p25: float
    p50: float
    p75: float
    p95: float


class Distribution(BaseModel):
    count: int
    mean: float | None = None
    std: float | None = Field(None, description="population std (ddof 0), as ADR-007 §6.1")
    percentiles: Percentiles | None = None


class QualityReport(BaseModel):
    """One model version in one process; the numbers cover the last ``window`` values."""

    model: str
    version: str
    variant: str
    pid: int
    seen: int = Field(description="embeddings observed since the process started")
    window: int
    raw_norm: Distribution = Field(description="raw (pre-L2) embedding norms")
    cosine_distance: Distribution = Field(description="1 - cosine of sampled recent pairs")
    anomalies: int = Field(description="anomalous_norm windows among the last `window`")
    anomaly_rate: float = Field(description="anomalies / windows in the rolling window")
    anomalies_total: int
    non_finite: int = Field(description="NaN/Inf raw norms, not added to the history")
    anomaly_threshold: float
    min_history: int


def describe(values: np.ndarray) -> Distribution:
    """Mean, population std and percentiles (numpy's linear interpolation) of ``values``."""
    if values.size == 0:
        return Distribution(count=0)
    x = values.astype(np.float64)
    p = np.percentile(x, PERCENTILES)
    return Distribution(
        count=int(x.size),
        mean=float(x.mean()),
        std=float(x.std()),
        percentiles=Percentiles(**{f"p{q}": float(v) for q, v in zip(PERCENTILES, p, strict=True)}),
    )


class _Ring:
    """The last ``size`` floats, oldest overwritten first."""

    def __init__(self, size: int) -> None:
        self.data = np.zeros(size, dtype=np.float64)
        self.count = 0
        self.pos = 0

    def push(self, value: float) -> None:
        self.data[self.pos] = value
        self.pos = (self.pos + 1) % self.data.size
        self.count = min(self.count + 1, self.data.size)

    def values(self) -> np.ndarray:
        """In arrival order, oldest first."""
        if self.count < self.data.size:
            return self.data[: self.count].copy()
        return np.concatenate([self.data[self.pos :], self.data[: self.pos]])


class QualityMonitor:
    """One model version's rolling windows. Thread-safe: the worker embeds concurrently."""

    def __init__(self, identity: ModelIdentity, settings: QualitySettings) -> None:
        self.identity = identity
        self.settings = settings
        self._norms = _Ring(settings.window)
        self._distances = _Ring(settings.window)
        self._flags = _Ring(settings.window)
        self._recent: np.ndarray | None = None
        self._recent_count = 0
        self._recent_pos = 0
        self._rng: np.random.Generator | None = None  # numpy.random loads on first use
        self._lock = threading.Lock()
        self.seen = 0
        self.anomalies_total = 0
        self.non_finite = 0

    def _sampler(self) -> np.random.Generator:
        if self._rng is None:
            self._rng = np.random.default_rng(self.settings.seed)
        return self._rng

    def is_anomalous(self, raw_norm: float) -> bool:
        """ADR-007 §6.1 against the current history (before ``raw_norm`` joins it)."""
        with self._lock:
            return self._is_anomalous(raw_norm)

    def _is_anomalous(self, raw_norm: float) -> bool:
        if self._norms.count < self.settings.min_history:
            return False
        history = self._norms.data[: self._norms.count]
        mean = float(history.mean())
        std = float(history.std())
        return abs(raw_norm - mean) > self.settings.anomaly_threshold * std

    def observe(self, raw_norm: float, embedding: np.ndarray) -> bool:
        """Record one window (its raw norm and its L2-normalised embedding); True when its
        norm is anomalous."""
        with self._lock:
            self.seen += 1
            if not np.isfinite(raw_norm) or not np.isfinite(embedding).all():
                self.non_finite += 1
                return False
            anomalous = self._is_anomalous(raw_norm)
            self._norms.push(raw_norm)
            self._flags.push(1.0 if anomalous else 0.0)
            self.anomalies_total += int(anomalous)
            self._pair(np.asarray(embedding, dtype=np.float32))
            return anomalous

    def _pair(self, embedding: np.ndarray) -> None:
        size = self.settings.recent
        if self._recent is None or self._recent.shape[1] != embedding.shape[0]:
            self._recent = np.zeros((size, embedding.shape[0]), dtype=np.float32)
            self._recent_count = self._recent_pos = 0
        n = self._recent_count
        k = min(self.settings.pair_sample, n)
        if k:
            # Pool slots oldest first, so distances enter the window in arrival order.
            order = (np.arange(n) + (self._recent_pos if n == size else 0)) % size
            picked = (
                order if k == n else order[np.sort(self._sampler().choice(n, k, replace=False))]
            )
            for cos in self._recent[picked] @ embedding:
                self._distances.push(float(1.0 - cos))
        self._recent[self._recent_pos] = embedding
        self._recent_pos = (self._recent_pos + 1) % size
        self._recent_count = min(n + 1, size)

    def report(self) -> QualityReport:
        with self._lock:
            norms = self._norms.values()
            distances = self._distances.values()
            flags = self._flags.values()
            anomalies = int(flags.sum())
            return QualityReport(
                model=self.identity.name,
                version=self.identity.version,
                variant=self.identity.variant,
                pid=os.getpid(),
                seen=self.seen,
                window=self.settings.window,
                raw_norm=describe(norms),
                cosine_distance=describe(distances),
                anomalies=anomalies,
                anomaly_rate=anomalies / flags.size if flags.size else 0.0,
                anomalies_total=self.anomalies_total,
                non_finite=self.non_finite,
                anomaly_threshold=self.settings.anomaly_threshold,
                min_history=self.settings.min_history,
            )


class QualityMonitors:
    """Every model version this process has embedded with."""

    def __init__(self, settings: QualitySettings) -> None:
        self.settings = settings
        self._monitors: dict[tuple[str, str, str], QualityMonitor] = {}
        self._lock = threading.Lock()

    def monitor(self, identity: ModelIdentity) -> QualityMonitor:
        key = (identity.name, identity.version, identity.variant)
        with self._lock:
            found = self._monitors.get(key)
            if found is None:
                found = self._monitors[key] = QualityMonitor(identity, self.settings)
            return found

    def observe(
        self, results: Iterable[WindowResult], skip: Sequence[bool] | None = None
    ) -> list[WindowResult]:
        """The results, with ``anomalous_norm`` set where the monitor says so; ``skip``
        marks windows that no model produced (zero-vector fallbacks), left unobserved."""
        out: list[WindowResult] = []
        for i, r in enumerate(results):
            if skip is not None and skip[i]:
                out.append(r)
                continue
            out.append(self.observe_one(r))
        return out

    def observe_one(self, result: WindowResult) -> WindowResult:
        monitor = self.monitor(result.meta.model)
        if not monitor.observe(result.quality.raw_norm, result.embedding):
            return result
        quality = dataclasses.replace(result.quality, anomalous_norm=True)
        return dataclasses.replace(result, quality=quality)

    def reports(self) -> list[QualityReport]:
        with self._lock:
            monitors = list(self._monitors.values())
        return [m.report() for m in sorted(monitors, key=lambda m: str(m.identity))]


_process: dict[str, QualityMonitors] = {}
_process_lock = threading.Lock()


def process_monitors(settings: QualitySettings) -> QualityMonitors:
    """This process's monitors, created on first use with the first caller's settings."""
    with _process_lock:
        if "monitors" not in _process:
            _process["monitors"] = QualityMonitors(settings)
        return _process["monitors"]
