"""Configuration: one pydantic model, filled from a named TOML profile plus env.

Precedence (highest first): explicit overrides passed by the caller (CLI flags), environment
variables ``SEVENSENSE_<SECTION>__<FIELD>``, the profile's TOML file, then the defaults below.
The profiles mirror ADR-007 §2.3 (default, field, server) and Appendix A (field, edge, cloud).
pydantic-settings reads the environment, and is imported only when a ``SEVENSENSE_``
variable is set: it alone took 0.1–0.16 s of every command's start (issue 25).
"""

from __future__ import annotations

import math
import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sevensense.errors import ConfigError
from sevensense.identity import ApiKeyRecord
from sevensense.profiles import PROFILE_NAMES

Provider = Literal["cuda", "coreml", "cpu"]
Padding = Literal["zero_pad", "reflect", "discard", "overlap_fill"]
ResampleQuality = Literal["linear", "medium", "high", "audiophile"]
NormMethodSetting = Literal["model", "perch", "peak", "rms", "none"]
GraphOptimization = Literal["disable", "basic", "extended", "all"]

FallbackStrategy = Literal[
    "cpu", "quantized_model", "cached_embedding", "deferred_queue", "zero_vector"
]

_DEFAULT_PROVIDERS: tuple[Provider, ...] = ("cuda", "coreml", "cpu")
_DEFAULT_FALLBACK: tuple[FallbackStrategy, ...] = (
    "cpu",
    "quantized_model",
    "cached_embedding",
    "deferred_queue",
)


ENV_PREFIX = "SEVENSENSE_"


def repo_root() -> Path:
    """The checkout this package was installed from (editable install), else the cwd."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "service").is_dir():
            return parent
    return Path.cwd()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InferenceSettings(_Section):
    providers: list[Provider] = Field(default_factory=lambda: list(_DEFAULT_PROVIDERS))
    device_id: int = 0
    intra_threads: int = Field(
        0, ge=0, description="0 = min(CPUs this process may use: affinity, cgroup quota; 4)"
    )
    inter_threads: int = Field(1, ge=1)
    graph_optimization: GraphOptimization = "all"
    allow_spinning: bool | Literal["auto"] = Field(
        "auto",
        description="ORT pool threads busy-wait between ops. auto: only when the process's "
        "CPUs are idle as the session is created (sampled for spin_probe_ms), since a "
        "spinning pool loses most of its speed when a core is shared (docs/performance.md)",
    )
    spin_duration_us: int = Field(
        200,
        ge=0,
        le=1_000_000,
        description="when spinning, how long a pool thread spins before it sleeps; bounds "
        "what a neighbour arriving mid-run costs; 0 = ONNX Runtime's own default",
    )
    spin_probe_ms: int = Field(
        100, ge=1, le=2000, description="auto spinning: how long the CPUs are sampled"
    )
    max_batch_size: int = Field(8, ge=1, le=1024)
    runtime: Literal["onnxruntime", "openvino"] = Field(
        "onnxruntime",
        description="runtime for the ONNX models; openvino (the openvino extra) runs every "
        "session on OpenVINO's CPU plugin, providers aside: for CPU hosts (docs/performance.md)",
    )
    prefetch_windows: int = Field(
        16,
        ge=0,
        le=1024,
        description="windows decoded ahead of inference by a background thread (bounded "
        "queue); 0 = decode in the calling thread",
    )
    model: str = "birdnet-v2.4"
    model_variant: str = "base"

    def resolved_intra_threads(self) -> int:
        return self.intra_threads or min(process_cpus(), 4)


class PreprocessingSettings(_Section):
    window_overlap: float | None = Field(
        None, ge=0.0, lt=1.0, description="None = the model's default overlap"
    )
    energy_threshold: float = Field(1e-6, ge=0.0, description="mean-square below this = silent")
    padding: Padding = "zero_pad"
    resample_quality: ResampleQuality = "high"
    normalization: NormMethodSetting = "model"
    target_peak: float = Field(0.25, gt=0.0, le=1.0)
    target_rms: float = Field(0.1, gt=0.0, le=1.0)
    clip: bool = True
    block_frames: int = Field(65536, ge=1024, description="decode block size in frames")
    max_duration_s: float | None = Field(None, gt=0.0)


class BreakerSettings(_Section):
    """ADR-007 §5.2: closed → open after ``failure_threshold`` consecutive failures →
    half-open after ``recovery_timeout_s`` → closed after ``success_threshold`` successes."""

    failure_threshold: int = Field(5, ge=1, le=1000)
    recovery_timeout_s: float = Field(10.0, gt=0.0, le=3600.0)
    success_threshold: int = Field(2, ge=1, le=100)
    half_open_max_calls: int = Field(1, ge=1, le=100, description="probes at once")


class FallbackSettings(_Section):
    """The chain tried in order after the primary model path (ADR-007 §5.1)."""

    strategies: list[FallbackStrategy] = Field(default_factory=lambda: list(_DEFAULT_FALLBACK))
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    quantized_variant: str = Field("quantized", description="variant of the same version")
    cache_max_entries: int = Field(2048, ge=0, description="per gateway worker, LRU")
    cache_similarity: float | None = Field(
        None, gt=0.0, le=1.0, description="near-duplicate threshold on audio; None = exact only"
    )


class QueueSettings(_Section):
    """Deferred requests: SQS in AWS, else an embedded SQLite queue that survives restarts."""

    backend: Literal["embedded", "sqs"] = "embedded"
    deferred_queue_url: str | None = None
    embedded_db: Path | None = Field(None, description="default: <state_dir>/queue.sqlite3")
    payload_store: str | None = Field(
        None, description="s3://bucket/prefix or a directory; default: <state_dir>/deferred"
    )
    max_receives: int = Field(5, ge=1, le=1000, description="then the dead-letter queue")
    visibility_timeout_s: int = Field(300, ge=1, le=43_200)
    inline_result_mb: float = Field(
        8.0, gt=0.0, description="GET /jobs/{id} inlines results up to this size"
    )


class SpeciesFilterSettings(_Section):
    """A species filter for every recording a worker processes: a place and week (BirdNET's
    range model) or a species list file; neither = all species."""

    lat: float | None = Field(None, ge=-90.0, le=90.0)
    lon: float | None = Field(None, ge=-180.0, le=180.0)
    week: int = Field(-1, ge=-1, le=48, description="1-48 as BirdNET counts it; -1 all year")
    sf_thresh: float = Field(0.03, gt=0.0, lt=1.0)
    species_list: Path | None = Field(None, description="Scientific_Common per line")


class WorkerSettings(_Section):
    """``sevensense worker``: deferred requests and S3-event batch jobs."""

    batch_queue_url: str | None = None
    input_bucket: str | None = None
    input_prefix: str = "incoming/"
    output_bucket: str | None = None
    output_prefix: str = "embeddings/"
    visibility_timeout_s: int = Field(900, ge=10, le=43_200)
    wait_time_s: int = Field(20, ge=0, le=20, description="SQS long poll")
    concurrency: int = Field(
        2,
        ge=1,
        le=64,
        description="messages at once; 2 overlaps one message's I/O with another's model "
        "time (measured on 2 cores: 0.91x the CLI's throughput, 0.72x with 1)",
    )
    max_receives: int = Field(3, ge=1, le=1000, description="batch jobs; then the DLQ")
    max_object_mb: float = Field(8192.0, gt=0.0)
    metrics_port: int = Field(9101, ge=0, le=65535, description="0 = no metrics endpoint")
    model: str | None = Field(None, description="None = the service's default model")
    shutdown_grace_s: float = Field(30.0, ge=0.0)
    detections_format: Literal["raven", "audacity", "csv", "kaleidoscope"] | None = Field(
        None,
        description="also write each recording's detections in this BirdNET-Analyzer format "
        "beside its Parquet output",
    )
    detections_min_conf: float = Field(0.25, ge=0.0, le=1.0)
    detections_sensitivity: float = Field(1.0, ge=0.5, le=1.5)
    detections_merge_consecutive: int = Field(1, ge=0)
    detections_resampler: Literal["kaiser_fast", "linear", "medium", "high", "audiophile"] = Field(
        "kaiser_fast",
        description="with detections, every window (embeddings too) is resampled so: "
        "kaiser_fast is BirdNET-Analyzer's (resampy), high is soxr HQ",
    )
    index: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="also add each job's windows to this index (idempotent: a redelivered "
        "message adds nothing twice); recording id = s3://bucket/key",
    )
    index_tenant: str = Field(
        "batch", min_length=1, max_length=64, description="the tenant batch entries belong to"
    )
    species: SpeciesFilterSettings = Field(default_factory=SpeciesFilterSettings)
    reduce: str | None = Field(
        None, description="PCA reducer name[:version] applied to every output (reduce fit)"
    )
    project: Literal["poincare"] | None = Field(None, description="projection applied last")
    curvature: float = Field(1.0, ge=-1e3, le=1e3, description="poincare: c = |curvature|")
    max_norm: float = Field(0.999, gt=0.0, lt=1.0, description="poincare: norm clamp")


class VerificationSettings(_Section):
    """Cross-validation against BirdNET (ADR-007 §7): per request, shadow, offline."""

    enable_birdnet: bool = Field(
        True, description="run the Verifier service (off: verify=true answers 'unavailable')"
    )
    birdnet_threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="a window counts only if BirdNET's best score reaches it"
    )
    discrepancy_threshold: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="a species one model scores this high, absent from the "
        "other's top 5, is a discrepancy",
    )
    model: str = Field("birdnet-v2.4", description="the verifier model (a BirdNET v2.4 ref)")
    sample_rate: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="shadow sampling: share of served requests verified after the answer is sent",
    )
    queue_size: int = Field(
        64, ge=1, description="shadow queue bound in BirdNET windows (576 KB each); drops beyond"
    )
    max_batch_size: int = Field(16, ge=1, description="the Verifier's adaptive batching")
    max_latency_ms: int = Field(5000, ge=1)
    provider: Literal["cpu", "gpu"] = "cpu"
    workers: int = Field(1, ge=1)
    intra_threads: int = Field(1, ge=1, description="ORT threads per Verifier worker (CPU)")
    cpu_priority: Literal["idle", "nice", "normal"] = Field(
        "idle",
        description="the Verifier's CPU processes: idle = SCHED_IDLE, they run only on cycles "
        "the model services leave (shadow work never slows /embed); nice = `nice` below",
    )
    nice: int = Field(10, ge=0, le=19, description="with cpu_priority = nice")
    url: str | None = Field(None, description="remote Verifier service; None = local")
    timeout_s: float = Field(30.0, gt=0.0, description="verify=true waits at most this long")


class QualitySettings(_Section):
    """The embedding-quality monitor (ADR-007 §6.1), per model version and process."""

    window: int = Field(1000, ge=10, le=1_000_000, description="rolling window, in embeddings")
    pair_sample: int = Field(
        2, ge=0, le=64, description="recent embeddings each new one is paired with (cosine)"
    )
    recent: int = Field(64, ge=2, le=4096, description="pool of recent embeddings for pairs")
    anomaly_threshold: float = Field(
        4.0, gt=0.0, description="raw norm this many std from the rolling mean = anomalous_norm"
    )
    min_history: int = Field(100, ge=2, description="no anomaly before this many norms")
    seed: int = 0


class ChecksSettings(_Section):
    """ADR-007 Appendix B as a command (`sevensense check`) and as the rollout gate."""

    gate: bool = Field(True, description="activation / canary weight > 0 needs a passing check")
    audio_dir: Path | None = Field(
        None, description="reference recordings; default ../shared/audio"
    )
    windows_per_file: int = Field(2, ge=1, le=1000, description="keeps the check to seconds")
    max_files: int = Field(24, ge=1, le=10_000, description="spread evenly over the folder")
    agreement_min: float = Field(0.8, ge=0.0, le=1.0, description="BirdNET top-5 agreement")


class IndexSettings(_Section):
    """Similarity search (issue 12): which backend holds the index spaces, and where."""

    backend: Literal["hoplite", "pgvector"] = "hoplite"
    dir: Path | None = Field(None, description="hoplite databases; default: <state_dir>/index")
    pg_url: str | None = Field(None, description="postgresql:// URL of a pgvector database")
    pg_secret: str | None = Field(
        None,
        description="Secrets Manager id/ARN holding {username, password, host, port, dbname}",
    )
    name: str = Field(
        "default",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="the index the API and worker use (a named index = backend + its spaces)",
    )
    hnsw_m: int = Field(16, ge=4, le=64, description="HNSW graph degree (both backends)")
    ef_construction: int = Field(128, ge=16, le=1024)
    ef_search: int = Field(64, ge=10, le=1000, description="candidates kept while searching")
    exact_below: int = Field(
        20_000,
        ge=0,
        description="a filtered or tenant-scoped search over at most this many entries is exact",
    )
    scope_cache_mb: int = Field(
        512,
        ge=0,
        description="hoplite: memory per space for the float32 blocks of recently searched "
        "exact scopes (filters of at most exact_below windows), least recently used out first",
    )
    pg_pool_size: int = Field(4, ge=1, le=64, description="pgvector connections per process")
    pg_build_mb: int = Field(
        512,
        ge=64,
        le=1 << 20,
        description="pgvector: maintenance_work_mem of the HNSW build after a bulk load; a "
        "graph larger than this is built on disk, several times slower (docs/index-at-scale.md)",
    )
    pg_halfvec: bool = Field(
        True,
        description="pgvector: new spaces store float16 (halfvec), kept in the row; "
        "existing spaces keep their type",
    )
    build_in_worker_mb: int = Field(
        64,
        ge=0,
        description="hoplite: a compaction whose old file plus folded vectors reach this size "
        "builds in a worker process, away from the GIL of the process that serves searches "
        "(0: always)",
    )
    compact_after: int = Field(
        10_000,
        ge=1,
        description="hoplite: fold the append log into usearch.index once it holds this many "
        "vectors (every query scans the log exactly, so this bounds that scan; lower it for "
        "wide spaces with a tight p99: docs/index-at-scale.md)",
    )
    compact_in_background: bool = Field(
        True,
        description="hoplite: the add that reaches compact_after starts the compaction on the "
        "space's own thread and returns; adds go on into the log meanwhile",
    )
    audio_roots: list[Path] = Field(
        default_factory=list,
        description="directories whose recordings /windows/{id}/audio may read (none: off)",
    )
    classifier_job_windows: int = Field(
        50_000,
        ge=0,
        description="POST /classifiers on a space of more windows than this trains as a "
        "deferred job (202, GET /jobs/{id}); at most this many, while the caller waits",
    )


class FrontDoorSettings(_Section):
    """What the entry enforces before and while it reads a request body (per gateway worker).

    The pace rule: at least ``upload_min_kib_per_s`` × ``upload_window_s`` KiB in every
    ``upload_window_s`` seconds of a body, so a crawl or a stall of a whole window is cut
    with 408. 8 KiB/s is 64 kbit/s, below what a field station's worst 3G link sustains.
    """

    header_timeout_s: float = Field(
        10.0, gt=0.0, description="a connection must complete its request headers in this time"
    )
    upload_min_kib_per_s: float = Field(
        8.0, ge=0.0, description="slowest accepted body pace, averaged over the window; 0 = off"
    )
    upload_window_s: float = Field(10.0, gt=0.0, le=600.0)
    # A sensor fleet behind one key uploads in bursts: 32 at once per key passes a burst,
    # and bounds what one leaked key can hold open.
    max_uploads_per_key: int = Field(32, ge=1, description="bodies being received at once")
    max_uploads_total: int = Field(128, ge=1, description="bodies being received at once, all keys")


class StreamSettings(_Section):
    """Live streams on ``WS /stream`` (issue 14), per gateway worker.

    A sensor behind a link that drops sends its backlog faster than real time after each
    reconnect, so the speed bound is a multiple of real time plus a burst of audio seconds,
    not real time itself."""

    max_per_key: int = Field(8, ge=1, description="open streams per key")
    max_total: int = Field(64, ge=1, description="open streams, all keys")
    max_frame_bytes: int = Field(1 << 20, ge=1024, le=64 << 20, description="one binary frame")
    max_speed: float = Field(
        10.0, gt=0.0, description="audio accepted per wall second, × real time, after the burst"
    )
    burst_s: float = Field(30.0, ge=0.0, description="audio seconds accepted ahead of max_speed")
    max_pending_windows: int = Field(
        32, ge=1, description="windows cut but not yet answered; reading pauses beyond it"
    )
    slow_reader_s: float = Field(
        10.0, gt=0.0, description="a result the client does not take for this long ends it"
    )
    send_buffer_bytes: int = Field(
        256 << 10, ge=0, description="kernel send buffer per stream socket; 0 = the OS default"
    )
    open_timeout_s: float = Field(10.0, gt=0.0, description="time to send the opening message")
    idle_timeout_s: float = Field(
        300.0, gt=0.0, description="no frame for this long: the stream is detached"
    )
    resume_ttl_s: float = Field(
        300.0, ge=0.0, description="a dropped stream's state is kept this long for a resume"
    )
    max_detached: int = Field(256, ge=0, description="dropped streams kept, oldest let go first")
    replay_windows: int = Field(
        256, ge=0, description="answered windows kept per stream, resent after a resume"
    )
    index_batch: int = Field(32, ge=1, description="index=true: windows per index write")
    resume_secret: str | None = Field(
        None,
        repr=False,
        description="HMAC key of resume tokens, the same on every entry task, so a resume "
        "reaching another task is trusted; unset = a random key per process (resumes on "
        "another task are refused)",
    )
    resume_token_ttl_s: float = Field(
        3600.0, gt=0.0, description="a resume token older than this is refused"
    )
    drain_s: float = Field(
        20.0,
        gt=0.0,
        description="SIGTERM: time to finish uploads in flight and hand every open stream a "
        "resume point before the process exits (the ECS stop timeout must exceed it)",
    )


class ScalingMetricsSettings(_Section):
    """The autoscaling signals each serving process writes to stdout as CloudWatch EMF
    (serving/telemetry/scaling.py); on in the ECS task definitions, off locally."""

    enabled: bool = False
    interval_s: float = Field(60.0, gt=0.0, le=3600.0, description="one EMF line per period")
    service: str = Field(
        "local", min_length=1, description="the ServiceName dimension: the ECS service name"
    )


class ServingSettings(_Section):
    """The HTTP service (issue 3): gateway limits, auth, routing, batching SLOs, tracing."""

    default_model: str = Field(
        "auto", description="auto = perch-v2 when its weights are present, else inference.model"
    )
    state_dir: Path = Field(
        default_factory=lambda: repo_root() / ".state",
        description="rollout state, API key file, dev key; shared by the service's workers",
    )
    auth_required: bool = True
    api_keys_file: Path | None = Field(None, description="default: <state_dir>/api_keys.json")
    api_keys: list[ApiKeyRecord] = Field(
        default_factory=list, description="extra hashed keys, e.g. from an env JSON list"
    )
    api_keys_secret: str | None = Field(
        None, description="Secrets Manager id/ARN holding {'keys': [hashed records]}"
    )
    api_keys_secret_refresh_s: float = Field(60.0, gt=0.0)
    rate_limit_per_s: float = Field(20.0, gt=0.0, description="per key, per gateway worker")
    rate_limit_burst: int = Field(40, ge=1)
    max_upload_mb: float = Field(100.0, gt=0.0)
    front_door: FrontDoorSettings = Field(default_factory=FrontDoorSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)
    max_audio_s: float = Field(3600.0, gt=0.0)
    max_inflight_requests: int = Field(64, ge=1, description="per gateway worker; then 503")
    request_timeout_s: float = Field(120.0, gt=0.0)
    chunk_windows: int = Field(8, ge=1, le=1024, description="windows per model-service call")
    chunk_concurrency: int = Field(4, ge=1, le=64, description="calls in flight per request")
    rollout_store: Literal["file", "ssm"] = "file"
    canary_param: str | None = Field(None, description="SSM parameter name (rollout_store=ssm)")
    rollout_poll_s: float = Field(1.0, gt=0.0)
    gpu_url: str | None = Field(None, description="remote GPU model service; None = local")
    cpu_url: str | None = Field(None, description="remote CPU model service; None = local")
    gpu_enabled: bool = True
    probe_interval_s: float = Field(
        5.0, gt=0.0, description="how often the entry asks each model service if it is ready"
    )
    gpu_require_cuda: bool = Field(
        True, description="False lets the GPU service run on CPU (tests, CPU-only hosts)"
    )
    # Adaptive-batching SLOs: BentoML sheds (503) a request predicted to wait longer than
    # max_latency_ms, and the gateway then tries the other path. Sizing: README.
    gpu_max_batch_size: int = Field(32, ge=2, le=1024)
    gpu_max_latency_ms: int = Field(1000, ge=10)
    cpu_workers: int = Field(
        0, ge=0, le=64, description="CPU model-service processes; 0 = min(cores, 4)"
    )
    cpu_intra_threads: int = Field(
        0, ge=0, le=256, description="ORT threads per CPU worker; 0 = cores // workers"
    )
    cpu_max_batch_size: int = Field(16, ge=2, le=1024)
    cpu_max_latency_ms: int = Field(5000, ge=10)
    max_loaded_versions: int = Field(3, ge=1, description="per model, per model service")
    tracing_exporter: Literal["none", "otlp"] = "none"
    tracing_sample_rate: float = Field(1.0, ge=0.0, le=1.0)
    otlp_endpoint: str | None = None
    scaling_metrics: ScalingMetricsSettings = Field(default_factory=ScalingMetricsSettings)


def cgroup_cpu_quota(
    cpu_max: str | None = None, cfs_quota_us: str | None = None, cfs_period_us: str | None = None
) -> float | None:
    """CPUs a cgroup's quota allows, from the texts of cgroup v2 ``cpu.max`` ("150000 100000",
    "max 100000") or cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (-1 = none);
    None when there is no quota or the text is unreadable."""
    if cpu_max is not None:
        fields = cpu_max.split()
        if len(fields) == 2 and fields[0] != "max":
            quota, period = fields
        else:
            return None
    elif cfs_quota_us is not None and cfs_period_us is not None:
        quota, period = cfs_quota_us.strip(), cfs_period_us.strip()
    else:
        return None
    try:
        q, per = int(quota), int(period)
    except ValueError:
        return None
    return q / per if q > 0 and per > 0 else None


def usable_cpus(affinity: int, quota: float | None) -> int:
    """CPUs the process may really use: its affinity mask, capped by the cgroup quota rounded
    up (1.5 CPUs of quota still run two threads, the half taken in turns)."""
    cpus = max(1, affinity)
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def cgroup_quota_here(
    root: Path = Path("/sys/fs/cgroup"), proc_cgroup: str | None = None
) -> float | None:
    """This process's CPU quota: cgroup v2 (its own group from ``/proc/self/cgroup`` and every
    group above it, since a parent's quota binds too; in a container, the root it sees),
    then v1's cpu controller; the tightest one found."""
    quotas: list[float] = []
    text = _read(Path("/proc/self/cgroup")) if proc_cgroup is None else proc_cgroup
    groups: list[Path] = []
    for line in (text or "").splitlines():
        if line.startswith("0::"):
            parts = [p for p in line[3:].split("/") if p]
            groups += [root.joinpath(*parts[:n]) for n in range(len(parts), 0, -1)]
    for group in dict.fromkeys([*groups, root]):
        found = cgroup_cpu_quota(cpu_max=_read(group / "cpu.max"))
        if found:
            quotas.append(found)
    for v1 in ("cpu", "cpu,cpuacct"):
        found = cgroup_cpu_quota(
            cfs_quota_us=_read(root / v1 / "cpu.cfs_quota_us"),
            cfs_period_us=_read(root / v1 / "cpu.cfs_period_us"),
        )
        if found:
            quotas.append(found)
    return min(quotas) if quotas else None


def process_cpus() -> int:
    """The CPUs this process may use (affinity and cgroup quota), not the machine's count:
    in a container or an ECS task ``os.cpu_count()`` is the host's, and ORT threads beyond
    the quota only queue behind each other."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        affinity = os.cpu_count() or 1
    return usable_cpus(affinity, cgroup_quota_here())


def cpu_layout(serving: ServingSettings, cores: int | None = None) -> tuple[int, int]:
    """(CPU model-service workers, ORT threads each).

    Several single- or few-threaded sessions beat one wide session for throughput: ORT's
    parallel-for waits for its slowest thread, which hurts when the gateway shares the
    cores (measured on 2 cores: 2 workers x 1 thread served 83 windows/s, 1 x 2 served 65).
    """
    cores = cores or process_cpus()
    workers = serving.cpu_workers or min(cores, 4)
    threads = serving.cpu_intra_threads or max(1, cores // workers)
    return workers, threads


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    profile: str = "default"
    models_dir: Path = Field(default_factory=lambda: repo_root() / "models")
    top_k: int = Field(5, ge=0, le=100)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    preprocessing: PreprocessingSettings = Field(default_factory=PreprocessingSettings)
    fallback: FallbackSettings = Field(default_factory=FallbackSettings)
    verification: VerificationSettings = Field(default_factory=VerificationSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    checks: ChecksSettings = Field(default_factory=ChecksSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)

    def queue_db(self) -> Path:
        return self.queue.embedded_db or self.serving.state_dir / "queue.sqlite3"

    def index_dir(self) -> Path:
        return self.index.dir or self.serving.state_dir / "index"

    def payload_uri(self) -> str:
        return self.queue.payload_store or str(self.serving.state_dir / "deferred")

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        if value not in PROFILE_NAMES and not Path(value).is_file():
            raise ValueError(f"unknown profile {value!r}; choose one of {', '.join(PROFILE_NAMES)}")
        return value


def profile_path(name: str) -> Path:
    """A profile is a packaged TOML file by name, or any TOML file by path."""
    candidate = Path(name)
    if candidate.suffix == ".toml" and candidate.is_file():
        return candidate
    if name not in PROFILE_NAMES:
        raise ConfigError(
            f"unknown profile {name!r}; choose one of {', '.join(PROFILE_NAMES)}",
            profile=name,
        )
    ref = resources.files("sevensense") / "profiles" / f"{name}.toml"
    return Path(str(ref))


# The names the Terraform task definitions set (infra/terraform/README.md), mapped onto
# settings; the canonical SEVENSENSE_<SECTION>__<FIELD> variable wins when both are set.
_ENV_ALIASES: dict[str, tuple[str, str]] = {
    "SEVENSENSE_GPU_URL": ("serving", "gpu_url"),
    "SEVENSENSE_CPU_URL": ("serving", "cpu_url"),
    "SEVENSENSE_CANARY_PARAM": ("serving", "canary_param"),
    "SEVENSENSE_API_KEYS_SECRET_ARN": ("serving", "api_keys_secret"),
    "SEVENSENSE_DEFERRED_QUEUE_URL": ("queue", "deferred_queue_url"),
    "SEVENSENSE_PAYLOAD_STORE": ("queue", "payload_store"),
    "SEVENSENSE_BATCH_QUEUE_URL": ("worker", "batch_queue_url"),
    "SEVENSENSE_INPUT_BUCKET": ("worker", "input_bucket"),
    "SEVENSENSE_INPUT_PREFIX": ("worker", "input_prefix"),
    "SEVENSENSE_OUTPUT_BUCKET": ("worker", "output_bucket"),
    "SEVENSENSE_VISIBILITY_TIMEOUT_S": ("worker", "visibility_timeout_s"),
    "SEVENSENSE_INDEX_DB_SECRET_ARN": ("index", "pg_secret"),
}


def _aliased_env() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for alias, (section, field) in _ENV_ALIASES.items():
        value = os.environ.get(alias)
        canonical = f"SEVENSENSE_{section.upper()}__{field.upper()}"
        if value and canonical not in os.environ:
            found.setdefault(section, {})[field] = value
    if "canary_param" in found.get("serving", {}) and (
        "SEVENSENSE_SERVING__ROLLOUT_STORE" not in os.environ
    ):
        found["serving"]["rollout_store"] = "ssm"
    if "deferred_queue_url" in found.get("queue", {}) and (
        "SEVENSENSE_QUEUE__BACKEND" not in os.environ
    ):
        found["queue"]["backend"] = "sqs"
    if "pg_secret" in found.get("index", {}) and "SEVENSENSE_INDEX__BACKEND" not in os.environ:
        found["index"]["backend"] = "pgvector"
    return found


def _env_is_read(name: str) -> bool:
    """Whether the environment source would read ``name`` (the profile and the aliases are
    read here, before it)."""
    upper = name.upper()
    return (
        upper.startswith(ENV_PREFIX)
        and upper != f"{ENV_PREFIX}PROFILE"
        and upper not in _ENV_ALIASES
    )


def _from_env() -> dict[str, Any]:
    """``SEVENSENSE_<SECTION>__<FIELD>`` variables as pydantic-settings parses them."""
    if not any(_env_is_read(name) for name in os.environ):
        return {}
    from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

    class _EnvSettings(Settings, BaseSettings):
        model_config = SettingsConfigDict(
            env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid"
        )

    return dict(EnvSettingsSource(_EnvSettings)())


def _merged(*layers: dict[str, Any]) -> dict[str, Any]:
    """Later layers win, section by section (as pydantic-settings merges its sources)."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = _merged(out[key], value)
            else:
                out[key] = value
    return out


def load_settings(profile: str | None = None, **overrides: Any) -> Settings:
    """Build settings for a profile (argument, else $SEVENSENSE_PROFILE, else ``default``)."""
    name = profile or os.environ.get("SEVENSENSE_PROFILE") or "default"
    for section, values in _aliased_env().items():
        merged = dict(values)
        merged.update(overrides.get(section) or {})
        overrides[section] = merged
    path = profile_path(name)
    try:
        with path.open("rb") as f:
            toml = tomllib.load(f)
        return Settings.model_validate(_merged(toml, _from_env(), {**overrides, "profile": name}))
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"invalid configuration for profile {name!r}: {exc}") from exc
