"""Prometheus metrics of the gateway and the model services (names listed in README).

BentoML runs each service in its own processes and points prometheus_client at a shared
multiprocess directory before the service module is imported, so the metrics are created
lazily, once per process, on first use; ``/metrics`` then aggregates every process.
Queue time and compute time are separate series, as Triton reports them, so a slow model
and a starved batcher can be told apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from prometheus_client import Counter, Gauge, Histogram

from sevensense.embeddings.quality import QualityReport

_LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
_BATCH_BUCKETS = tuple(float(2**i) for i in range(11))
_AGREEMENT_BUCKETS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
_NORM_BUCKETS = (0.0, 1e-6, 0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1000.0)

MODEL_LABELS = ("path", "model", "version", "provider")
INDEX_LABELS = ("backend", "index", "space")
_INDEX_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True)
class Metrics:
    http_requests: Counter
    http_latency: Histogram
    embed_requests: Counter
    embed_windows: Counter
    fallbacks: Counter
    auth_failures: Counter
    rate_limited: Counter
    embedding_norm: Histogram
    queue_time: Histogram
    compute_time: Histogram
    batch_size: Histogram
    model_windows: Counter
    head_windows: Counter
    model_pending: Gauge
    model_loads: Counter
    path_ready: Gauge
    traffic_weight: Gauge
    breaker_state: Gauge
    breaker_transitions: Counter
    fallback_windows: Counter
    cache_hits: Counter
    deferred_requests: Counter
    front_door_refusals: Counter
    quality: Gauge
    verification_agreement: Histogram
    verification_windows: Counter
    streams_open: Gauge
    stream_frames: Counter
    stream_bytes: Counter
    stream_windows: Counter
    stream_latency: Histogram
    stream_throttles: Counter
    stream_closes: Counter
    stream_resumes: Counter
    index_adds: Counter
    index_entries: Gauge
    index_search: Histogram
    index_compaction: Histogram


@cache
def metrics() -> Metrics:
    return Metrics(
        http_requests=Counter(
            "sevensense_http_requests",
            "Partner API requests by endpoint and HTTP status",
            ("endpoint", "status"),
        ),
        http_latency=Histogram(
            "sevensense_http_request_seconds",
            "Partner API latency, receive to response, by endpoint",
            ("endpoint",),
            buckets=_LATENCY_BUCKETS,
        ),
        embed_requests=Counter(
            "sevensense_embed_requests",
            "Embed requests by model version, serving path and outcome",
            ("model", "version", "route", "outcome"),
        ),
        embed_windows=Counter(
            "sevensense_embed_windows",
            "Windows returned to partners by model version and provider",
            ("model", "version", "provider"),
        ),
        fallbacks=Counter(
            "sevensense_path_fallbacks",
            "Model calls moved from one path to another, with the reason",
            ("from_path", "to_path", "reason"),
        ),
        auth_failures=Counter(
            "sevensense_auth_failures", "Rejected credentials by error code", ("code",)
        ),
        rate_limited=Counter(
            "sevensense_rate_limited", "Requests refused by the per-key rate limit", ("key_id",)
        ),
        embedding_norm=Histogram(
            "sevensense_embedding_norm",
            "L2 norm of raw embeddings before normalisation (drift and dead-model signal)",
            ("model", "version"),
            buckets=_NORM_BUCKETS,
        ),
        queue_time=Histogram(
            "sevensense_inference_queue_seconds",
            "Time a window waited between the gateway and the start of its batch",
            MODEL_LABELS,
            buckets=_LATENCY_BUCKETS,
        ),
        compute_time=Histogram(
            "sevensense_inference_compute_seconds",
            "session.run time of one batch",
            MODEL_LABELS,
            buckets=_LATENCY_BUCKETS,
        ),
        batch_size=Histogram(
            "sevensense_batch_size",
            "Windows per session.run (adaptive batching across requests)",
            MODEL_LABELS,
            buckets=_BATCH_BUCKETS,
        ),
        model_windows=Counter(
            "sevensense_model_windows",
            "Windows run by the model services, by outcome",
            (*MODEL_LABELS, "outcome"),
        ),
        head_windows=Counter(
            "sevensense_head_windows",
            "Windows a classifier head scored inside a model service's batch, by outcome",
            ("path", "classifier", "outcome"),
        ),
        model_pending=Gauge(
            "sevensense_model_pending_windows",
            "Windows a model service accepted and has not answered (its batch queue and the "
            "batch running), per process",
            multiprocess_mode="livesum",
        ),
        model_loads=Counter(
            "sevensense_model_loads",
            "Model session loads (start-up, hot swap, canary) by outcome",
            ("path", "model", "version", "outcome"),
        ),
        path_ready=Gauge(
            "sevensense_path_ready",
            "1 when the gateway considers a model path usable",
            ("path",),
            multiprocess_mode="livemax",
        ),
        traffic_weight=Gauge(
            "sevensense_traffic_weight",
            "Share of traffic (percent) routed to a model version",
            ("model", "version"),
            multiprocess_mode="livemax",
        ),
        breaker_state=Gauge(
            "sevensense_circuit_state",
            "Circuit breaker per path: 0 closed, 1 open, 2 half-open",
            ("path",),
            multiprocess_mode="livemax",
        ),
        breaker_transitions=Counter(
            "sevensense_circuit_transitions",
            "Circuit breaker state changes",
            ("path", "from_state", "to_state"),
        ),
        fallback_windows=Counter(
            "sevensense_fallback_windows",
            "Windows served by a fallback strategy after every model path failed",
            ("strategy",),
        ),
        cache_hits=Counter(
            "sevensense_embedding_cache_hits",
            "Windows answered from the embedding cache, exact or near-duplicate",
            ("kind",),
        ),
        deferred_requests=Counter(
            "sevensense_deferred_requests",
            "Requests answered 202 and queued, by outcome of the enqueue",
            ("outcome",),
        ),
        front_door_refusals=Counter(
            "sevensense_front_door_refusals",
            "Requests the front door answered before or while reading the body, by reason",
            ("reason",),
        ),
        quality=Gauge(
            "sevensense_embedding_quality",
            "Embedding-quality monitor (ADR-007 §6.1) per model version and process: raw-norm "
            "and pair cosine-distance statistics over the rolling window, anomaly rate",
            ("model", "version", "variant", "stat"),
            multiprocess_mode="liveall",
        ),
        verification_agreement=Histogram(
            "sevensense_verification_agreement",
            "Top-5 agreement with BirdNET v2.4 per counted window (ADR-007 §7), verify=true "
            "and shadow sampling",
            ("model", "version"),
            buckets=_AGREEMENT_BUCKETS,
        ),
        verification_windows=Counter(
            "sevensense_verification_windows",
            "Windows sent for verification by outcome: counted, a null reason "
            "(verifier_below_threshold, no_verifier_window, ...), unavailable, dropped",
            ("model", "version", "outcome"),
        ),
        streams_open=Gauge(
            "sevensense_streams_open",
            "Live streams on WS /stream: attached to a connection, or detached awaiting a resume",
            ("state",),
            multiprocess_mode="livesum",
        ),
        stream_frames=Counter("sevensense_stream_frames", "Binary audio frames received"),
        stream_bytes=Counter("sevensense_stream_bytes", "Audio bytes received on live streams"),
        stream_windows=Counter(
            "sevensense_stream_windows", "Window results sent on live streams", ("model",)
        ),
        stream_latency=Histogram(
            "sevensense_stream_window_latency_seconds",
            "Live stream: a window's last sample received → its result sent",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        ),
        stream_throttles=Counter(
            "sevensense_stream_throttles", "Times a stream ran ahead of the speed bound"
        ),
        stream_closes=Counter(
            "sevensense_stream_closes",
            "Stream connections ended, by reason: end, dropped, drained, or the error code",
            ("reason",),
        ),
        stream_resumes=Counter(
            "sevensense_stream_resumes",
            "Streams resumed: held (from this worker's memory) or rebuilt (from a token)",
            ("how",),
        ),
        index_adds=Counter(
            "sevensense_index_adds",
            "Windows added to the similarity index (new ones; rate() gives adds/s)",
            INDEX_LABELS,
        ),
        index_entries=Gauge(
            "sevensense_index_entries",
            "Entries per index space, as last counted by this process (every 30 s at most)",
            INDEX_LABELS,
            multiprocess_mode="livemax",
        ),
        index_search=Histogram(
            "sevensense_index_search_seconds",
            "One /search call's index time (all its query windows), by backend",
            ("backend", "index"),
            buckets=_INDEX_BUCKETS,
        ),
        index_compaction=Histogram(
            "sevensense_index_compaction_seconds",
            "hoplite: folding the append log into usearch.index",
            ("index", "space"),
            buckets=_LATENCY_BUCKETS,
        ),
    )


def quality_stats(report: QualityReport) -> dict[str, float]:
    """The report as flat gauge values, named as in ``GET /quality``."""
    stats: dict[str, float] = {
        "seen": float(report.seen),
        "anomaly_rate": report.anomaly_rate,
        "anomalies_total": float(report.anomalies_total),
    }
    distributions = (("raw_norm", report.raw_norm), ("cosine_distance", report.cosine_distance))
    for prefix, dist in distributions:
        if dist.mean is None or dist.std is None or dist.percentiles is None:
            continue
        stats[f"{prefix}_mean"] = dist.mean
        stats[f"{prefix}_std"] = dist.std
        for name, value in dist.percentiles.model_dump().items():
            stats[f"{prefix}_{name}"] = float(value)
    return stats


def publish_quality(report: QualityReport) -> None:
    gauge = metrics().quality
    for stat, value in quality_stats(report).items():
        gauge.labels(report.model, report.version, report.variant, stat).set(value)
