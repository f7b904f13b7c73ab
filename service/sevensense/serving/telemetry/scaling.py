"""The autoscaling signals: CloudWatch metrics the serving processes publish themselves.

Each process writes one CloudWatch Embedded Metric Format (EMF) line to stdout per period;
on ECS the awslogs driver ships stdout to CloudWatch Logs, which extracts the metrics from
the ``_aws`` envelope, so publishing needs no API call and no credentials (EMF
specification: https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/
CloudWatch_Embedded_Metric_Format_Specification.html). The names below are the one source
of truth: the target-tracking policies in infra/terraform/modules/serving must use the
same namespace, metric names and dimensions (tests/infra/test_scaling_signals.py).

The values are read from this process's own Prometheus metrics (telemetry/metrics.py),
so ``/metrics`` and CloudWatch cannot disagree. A task with several processes (CPU model
workers) writes one line per process; the policies take the Average over every line of a
service, which is the per-task figure for the entry (one process) and the mean wait for
the model services.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, TextIO

from prometheus_client.metrics import MetricWrapperBase

from sevensense.serving.telemetry.metrics import metrics
from sevensense.settings import ScalingMetricsSettings

log = logging.getLogger("sevensense.serving.scaling")

NAMESPACE = "SevenSense/Serving"
SERVICE_DIMENSION = "ServiceName"
DIMENSIONS: tuple[str, ...] = (SERVICE_DIMENSION,)

Unit = Literal["Count", "Count/Second", "Milliseconds"]


@dataclass(frozen=True)
class Signal:
    name: str
    unit: Unit


# Entry: what saturates it is open WebSocket streams and uploads being embedded.
OPEN_STREAMS = Signal("OpenStreams", "Count")
INFLIGHT_UPLOADS = Signal("InflightUploads", "Count")
REQUESTS_PER_SECOND = Signal("RequestsPerSecond", "Count/Second")
# Model services: how long a window waits for its batch, the windows waiting or running
# now (BentoML's queue depth, which it does not expose: counted around the batched API),
# and the windows run.
BATCH_QUEUE_WAIT_MS = Signal("BatchQueueWaitMs", "Milliseconds")
PENDING_WINDOWS = Signal("PendingWindows", "Count")
WINDOWS_PER_SECOND = Signal("WindowsPerSecond", "Count/Second")

ENTRY_SIGNALS = (OPEN_STREAMS, INFLIGHT_UPLOADS, REQUESTS_PER_SECOND)
MODEL_SIGNALS = (BATCH_QUEUE_WAIT_MS, PENDING_WINDOWS, WINDOWS_PER_SECOND)

Sampler = Callable[[], Mapping[Signal, float]]


def emf_line(service: str, values: Mapping[Signal, float], timestamp_ms: int) -> str:
    """One EMF document (a single JSON line): the envelope names the metrics, the root
    members carry the dimension value and the metric values."""
    document: dict[str, object] = {
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [list(DIMENSIONS)],
                    "Metrics": [{"Name": s.name, "Unit": s.unit} for s in values],
                }
            ],
        },
        SERVICE_DIMENSION: service,
    }
    for signal, value in values.items():
        document[signal.name] = round(float(value), 3)
    return json.dumps(document, separators=(",", ":"))


def _total(metric: MetricWrapperBase, suffix: str, **labels: str) -> float:
    """Sum of this process's samples of one series (``_total``, ``_sum``, ``_count`` or
    the bare name), over every label set matching ``labels``."""
    total = 0.0
    for family in metric.collect():
        for sample in family.samples:
            if sample.name != family.name + suffix:
                continue
            if all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


class _Rate:
    """Per-second rate of a monotonic total between two reads."""

    def __init__(self, read: Callable[[], float]) -> None:
        self.read = read
        self.last = read()
        self.at = time.monotonic()

    def __call__(self) -> float:
        now, value = time.monotonic(), self.read()
        rate = (value - self.last) / max(now - self.at, 1e-9)
        self.last, self.at = value, now
        return max(rate, 0.0)


def entry_sampler(inflight: Callable[[], int]) -> Sampler:
    m = metrics()
    requests = _Rate(lambda: _total(m.http_requests, "_total"))

    def sample() -> dict[Signal, float]:
        return {
            OPEN_STREAMS: _total(m.streams_open, "", state="attached"),
            INFLIGHT_UPLOADS: float(inflight()),
            REQUESTS_PER_SECOND: requests(),
        }

    return sample


def model_sampler(pending: Callable[[], int]) -> Sampler:
    """Mean queue wait of the windows batched since the last line (0 when none were, so
    an idle service lets target tracking scale in), and the windows pending now
    (``pending``: the model service's own count, model_service/pending.py), which the
    Prometheus gauge shows too."""
    m = metrics()
    last = [_total(m.queue_time, "_sum"), _total(m.queue_time, "_count")]
    windows = _Rate(lambda: _total(m.model_windows, "_total"))

    def sample() -> dict[Signal, float]:
        wait_s, count = _total(m.queue_time, "_sum"), _total(m.queue_time, "_count")
        waited, n = wait_s - last[0], count - last[1]
        last[:] = [wait_s, count]
        m.model_pending.set(pending())
        return {
            BATCH_QUEUE_WAIT_MS: 1e3 * waited / n if n > 0 else 0.0,
            PENDING_WINDOWS: _total(m.model_pending, ""),
            WINDOWS_PER_SECOND: windows(),
        }

    return sample


class Publisher:
    """A daemon thread writing one EMF line per period; a failing sample is logged and
    skipped, never fatal to the service."""

    def __init__(
        self,
        settings: ScalingMetricsSettings,
        sampler: Sampler,
        out: TextIO | None = None,
    ) -> None:
        self.settings = settings
        self.sampler = sampler
        self.out = out
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="scaling-metrics", daemon=True)

    def start(self) -> Publisher:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()

    def publish_once(self) -> None:
        line = emf_line(self.settings.service, self.sampler(), int(time.time() * 1000))
        out = self.out or sys.stdout
        out.write(line + "\n")  # one write: lines of concurrent processes never interleave
        out.flush()

    def _run(self) -> None:
        while not self.stopped.wait(self.settings.interval_s):
            try:
                self.publish_once()
            except Exception:
                log.exception("scaling metrics: sample failed")


def start(settings: ScalingMetricsSettings, sampler: Callable[[], Sampler]) -> Publisher | None:
    """The publisher, started, when the settings enable it; the sampler is built only then."""
    if not settings.enabled:
        return None
    return Publisher(settings, sampler()).start()
