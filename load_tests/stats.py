"""What a load step measures, without Locust (pytest imports this; Locust monkey-patches).

Latency percentiles come from the raw client timings; throughput and batch sizes from the
service's own Prometheus counters, read at both ends of the measured interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import psutil

from load_tests.server import samples


def latency_stats(latencies_ms: list[float]) -> dict[str, float]:
    """Exact percentiles of the raw latencies (Locust's own are rounded to 2 digits)."""
    if not latencies_ms:
        raise ValueError("no latencies")
    values = np.asarray(latencies_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": float(values.mean()),
        "max_ms": float(values.max()),
    }


@dataclass(frozen=True)
class CpuPath:
    """A model service's counters for one model (the CPU path unless ``path`` says "gpu"),
    from one /metrics exposition."""

    windows: float
    batches: float
    batched_windows: float
    buckets: dict[float, float]
    compute_s: float
    queue_s: float
    queued: float

    @classmethod
    def read(cls, url: str, key: str, model: str, path: str = "cpu") -> CpuPath:
        text = httpx.get(f"{url}/metrics", headers={"X-API-Key": key}, timeout=30).text
        name = model.split(":", maxsplit=1)[0]

        def total(metric: str, **match: str) -> float:
            wanted = {"path": path, "model": name, **match}
            return sum(
                v
                for labels, v in samples(text, metric)
                if all(labels.get(k) == w for k, w in wanted.items())
            )

        buckets: dict[float, float] = {}
        for labels, v in samples(text, "sevensense_batch_size_bucket"):
            if labels.get("path") == path and labels.get("model") == name:
                le = float(labels["le"])
                buckets[le] = buckets.get(le, 0.0) + v
        return cls(
            windows=total("sevensense_model_windows_total", outcome="ok"),
            batches=total("sevensense_batch_size_count"),
            batched_windows=total("sevensense_batch_size_sum"),
            buckets=buckets,
            compute_s=total("sevensense_inference_compute_seconds_sum"),
            queue_s=total("sevensense_inference_queue_seconds_sum"),
            queued=total("sevensense_inference_queue_seconds_count"),
        )

    def since(self, before: CpuPath, seconds: float) -> dict[str, Any]:
        """Rates and batch sizes over an interval; the largest batch is known to its
        histogram bucket only, so it is given as (lower, upper] bounds."""
        batches = self.batches - before.batches
        deltas = {le: v - before.buckets.get(le, 0.0) for le, v in sorted(self.buckets.items())}
        bounds: list[float] | None = None
        lower = 0.0
        for le, count in deltas.items():
            if batches and count >= batches:
                bounds = [lower, le]
                break
            lower = le
        queued = self.queued - before.queued
        return {
            "windows": self.windows - before.windows,
            "windows_per_s": (self.windows - before.windows) / seconds,
            "batches": batches,
            "batch_mean": (self.batched_windows - before.batched_windows) / batches
            if batches
            else 0.0,
            "batch_max_bucket": bounds,
            "session_busy": (self.compute_s - before.compute_s) / seconds,
            "queue_mean_ms": 1e3 * (self.queue_s - before.queue_s) / queued if queued else 0.0,
        }


def cpu_s(proc: psutil.Process | None, tree: bool = True) -> dict[str, float]:
    """User + system CPU seconds so far of a process, and with ``tree`` of its descendants,
    by BentoML service (``--service-name`` of the worker; ``serve`` for the supervisor)."""
    used: dict[str, float] = {}
    if proc is None:
        return used
    for p in [proc, *(proc.children(recursive=True) if tree else [])]:
        try:
            t = p.cpu_times()
            args = p.cmdline()
        except psutil.Error:
            continue
        name = args[args.index("--service-name") + 1] if "--service-name" in args else "serve"
        used[name] = used.get(name, 0.0) + t.user + t.system
    return used


def host_busy_s() -> float:
    """CPU seconds the whole host has been busy so far (all cores, all processes): with the
    client's and the server's own figures it shows what else competed during a step."""
    t = psutil.cpu_times()
    return float(sum(t)) - float(t.idle) - float(getattr(t, "iowait", 0.0))
