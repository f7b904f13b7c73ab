"""Prometheus metrics of ``sevensense worker`` (names listed in README).

Each worker owns its registry, so tests can run several workers in one process and the
endpoint shows only the worker's own series.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
_FACTOR = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0)


@dataclass
class WorkerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.messages = Counter(
            "sevensense_worker_messages",
            "Messages handled, by queue, kind and outcome (done, exists, skipped, missing, "
            "test_event, ignored, retry, dead_lettered, released)",
            ["queue", "kind", "outcome"],
            registry=r,
        )
        self.processing_seconds = Histogram(
            "sevensense_worker_processing_seconds",
            "Wall time from receipt to outcome of one message",
            ["queue", "kind"],
            buckets=_SECONDS,
            registry=r,
        )
        self.audio_seconds = Counter(
            "sevensense_worker_audio_seconds",
            "Seconds of audio embedded",
            ["queue", "kind"],
            registry=r,
        )
        self.windows = Counter(
            "sevensense_worker_windows", "Windows embedded", ["queue", "kind"], registry=r
        )
        self.realtime_factor = Histogram(
            "sevensense_worker_realtime_factor",
            "Audio seconds per wall second of each processed message",
            ["queue", "kind"],
            buckets=_FACTOR,
            registry=r,
        )
        self.in_flight = Gauge(
            "sevensense_worker_in_flight", "Messages being processed now", ["queue"], registry=r
        )
        self.dead_lettered = Counter(
            "sevensense_worker_dead_lettered",
            "Messages moved to the dead-letter queue, by failure code",
            ["queue", "code"],
            registry=r,
        )
        self.visibility_extensions = Counter(
            "sevensense_worker_visibility_extensions",
            "ChangeMessageVisibility calls that kept a message hidden while processed",
            ["queue", "result"],
            registry=r,
        )
        self.receive_errors = Counter(
            "sevensense_worker_receive_errors",
            "Failed receive calls (queue unreachable)",
            ["queue"],
            registry=r,
        )

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
