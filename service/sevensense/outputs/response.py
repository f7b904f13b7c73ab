"""One recording's embedding outcome and the body a partner receives: JSON or Arrow IPC.

Both faces reach this from below: the HTTP service answers ``/embed`` with it, and the
worker stores the same body as a deferred job's result, so a client cannot tell (apart from
``strategy: worker``) which path served it. The Arrow stream carries the same columns as the
CLI's Parquet files (one schema for every output of the platform) and the request-level
fields as schema metadata ``sevensense``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
from pydantic import BaseModel, Field

from sevensense.artifacts.manifest import ModelIdentity
from sevensense.artifacts.registry import Artifact
from sevensense.audio.pipeline import StreamStats
from sevensense.embeddings.transform import IDENTITY, VectorTransform
from sevensense.inference.engine import WindowResult
from sevensense.outputs.writers import results_schema, results_table
from sevensense.verification.agreement import RequestVerification, WindowVerification

ARROW_MEDIA_TYPE = "application/vnd.apache.arrow.stream"

# What produced a window (``windows[].strategy``): a model path, the worker, or a fallback.
GPU = "gpu"
CPU = "cpu"
WORKER = "worker"
QUANTIZED = "quantized"
CACHE = "cache"
ZERO = "zero_vector"
DEGRADED = frozenset({QUANTIZED, CACHE, ZERO})


class Species(BaseModel):
    label: str
    score: float = Field(description="sigmoid of the model's logit")


class WindowQuality(BaseModel):
    valid: bool
    raw_norm: float
    sparsity: float
    flags: list[str] = Field(default_factory=list)


class WindowJSON(BaseModel):
    index: int
    start_s: float
    end_s: float
    padded_samples: int
    embedding: list[float]
    top_k: list[Species] = Field(default_factory=list)
    quality: WindowQuality
    provider: str
    strategy: str = Field(
        description="what produced it: gpu, cpu, worker (a model path), quantized, cache, "
        "zero_vector (fallbacks; a zero vector is all zeros and flagged invalid)"
    )
    cache_similarity: float | None = Field(
        None, description="cache hits: 1.0 exact, else the audio similarity of the match"
    )
    logits: list[float] | None = None
    spectrogram: list[list[float]] | None = None
    custom: list[Species] | None = Field(
        None, description="classifier=…: the custom classifier's classes and sigmoid scores"
    )
    verification: WindowVerification | None = Field(
        None, description="verify=true: BirdNET's top 5, the agreement (or null and why)"
    )


class SkippedJSON(BaseModel):
    index: int
    start_s: float
    end_s: float
    reason: str


class Timing(BaseModel):
    total_ms: float
    decode_ms: float
    resample_ms: float
    window_ms: float
    queue_ms: float = Field(description="mean per model call: waiting for a batch")
    infer_ms: float = Field(description="mean per model call: session.run")
    postprocess_ms: float

    @classmethod
    def of(
        cls,
        stats: StreamStats,
        *,
        total_s: float,
        queue_ms: float = 0.0,
        infer_ms: float = 0.0,
        postprocess_ms: float = 0.0,
    ) -> Timing:
        """The audio stages come from the stream's own counters; the caller adds the rest."""
        return cls(
            total_ms=total_s * 1e3,
            decode_ms=stats.decode_s * 1e3,
            resample_ms=stats.resample_s * 1e3,
            window_ms=stats.window_s * 1e3,
            queue_ms=queue_ms,
            infer_ms=infer_ms,
            postprocess_ms=postprocess_ms,
        )


class ReducerInfo(BaseModel):
    name: str
    version: str
    sha256: str = Field(description="of the reducer artifact (reducer.npz)")
    in_dim: int
    out_dim: int
    explained_variance: float = Field(description="fraction of the fitted variance kept")


class ProjectionInfo(BaseModel):
    kind: str
    curvature: float
    max_norm: float


class EmbedResponse(BaseModel):
    request_id: str
    model: ModelIdentity
    route: str = Field(description="the path or strategy that served (last, if mixed)")
    providers: list[str]
    fallback: bool = Field(description="true when the preferred path failed and another served")
    strategies: dict[str, int] = Field(
        default_factory=dict, description="windows per strategy (see windows[].strategy)"
    )
    degraded: bool = Field(
        False, description="some windows come from a fallback strategy, not a full model path"
    )
    zero_vector_windows: int = Field(0, description="windows answered with a flagged zero vector")
    routing_key_hash: str
    duration_s: float
    source_sample_rate: int
    sample_rate: int
    window_s: float
    hop_s: float
    embedding_dim: int = Field(description="of the vectors returned (after any reducer)")
    reducer: ReducerInfo | None = Field(
        None, description="the PCA reducer applied to every embedding (re-normalised after)"
    )
    projection: ProjectionInfo | None = Field(
        None, description="the projection applied last (poincare: points in the ball)"
    )
    windows: list[WindowJSON]
    skipped: list[SkippedJSON] = Field(default_factory=list)
    timing: Timing
    species_filter: dict[str, object] | None = Field(
        None,
        description="the filter top-k was restricted by: kind (location/list), size, "
        "lat/lon/week/threshold",
    )
    verification: RequestVerification | None = Field(
        None,
        description="verify=true: the verifier, whether it answered, and the agreement "
        "summary (windows, counted, mean, share >= 0.8, discrepancies)",
    )
    classifier: str | None = Field(
        None, description="classifier=…: the custom classifier (name:version) of windows[].custom"
    )


@dataclass
class EmbedOutcome:
    """One recording, embedded: the windows in order and how each was produced."""

    artifact: Artifact
    results: list[WindowResult]
    stats: StreamStats
    route: str
    providers: list[str]
    fallback: bool
    window_s: float
    hop_s: float
    routing_key_hash: str
    timing: Timing
    served: list[str] = field(default_factory=list)
    similarity: list[float | None] = field(default_factory=list)
    species_filter: dict[str, object] | None = None
    species: tuple[str, ...] | None = None
    transform: VectorTransform = IDENTITY  # already applied to ``results``
    classifier: str | None = None  # the custom classifier (name:version) that scored them
    verification: RequestVerification | None = None
    window_verification: list[WindowVerification] | None = None
    resampler: str = "high"  # the resample quality the windows were made with

    @property
    def degraded(self) -> list[str]:
        """The fallback strategies that produced some window, sorted."""
        return sorted({s for s in self.served if s in DEGRADED})


def _served(outcome: EmbedOutcome) -> list[str]:
    return outcome.served or [outcome.route] * len(outcome.results)


def _similarity(outcome: EmbedOutcome) -> list[float | None]:
    return outcome.similarity or [None] * len(outcome.results)


def _checks(outcome: EmbedOutcome) -> list[WindowVerification | None]:
    if outcome.window_verification is None:
        return [None] * len(outcome.results)
    return list(outcome.window_verification)


_DISCREPANCY = pa.struct(
    [
        ("species", pa.string()),
        ("flagged_by", pa.string()),
        ("primary_score", pa.float32()),
        ("verifier_score", pa.float32()),
    ]
)
VERIFICATION_COLUMNS = (
    pa.field("verification_agreement", pa.float32()),
    pa.field("verification_reason", pa.string()),
    pa.field("verifier_top5", pa.list_(pa.string())),
    pa.field("verifier_top5_scores", pa.list_(pa.float32())),
    pa.field("verification_discrepancies", pa.list_(_DISCREPANCY)),
)


def _verification_arrays(checks: list[WindowVerification | None]) -> list[pa.Array]:
    """verify=true in Arrow: one column per field; the summary is in the header metadata."""
    values = [
        [c.agreement if c else None for c in checks],
        [c.reason if c else None for c in checks],
        [[s.species for s in c.verifier_top5] if c else None for c in checks],
        [[s.score for s in c.verifier_top5] if c else None for c in checks],
        [[d.model_dump() for d in c.discrepancies] if c else None for c in checks],
    ]
    return [pa.array(v, f.type) for v, f in zip(values, VERIFICATION_COLUMNS, strict=True)]


def window_json(
    r: WindowResult,
    served: str,
    similarity: float | None = None,
    check: WindowVerification | None = None,
    *,
    embedding: bool = True,
) -> WindowJSON:
    """One window as partners see it, in a whole answer or alone on a live stream."""
    return WindowJSON(
        index=r.index,
        start_s=round(r.start_s, 6),
        end_s=round(r.end_s, 6),
        padded_samples=r.padded_samples,
        embedding=r.embedding.tolist() if embedding else [],
        top_k=[Species(label=label, score=score) for label, score in r.top_k],
        quality=WindowQuality(
            valid=r.quality.is_valid,
            raw_norm=r.quality.raw_norm,
            sparsity=r.quality.sparsity,
            flags=[*r.quality.flags(), *([ZERO] if served == ZERO else [])],
        ),
        provider=r.meta.provider,
        strategy=served,
        cache_similarity=similarity,
        logits=r.logits.tolist() if r.logits is not None else None,
        spectrogram=r.spectrogram.tolist() if r.spectrogram is not None else None,
        custom=[Species(label=c, score=s) for c, s in r.custom] if r.custom is not None else None,
        verification=check,
    )


def to_response(outcome: EmbedOutcome, request_id: str) -> EmbedResponse:
    manifest = outcome.artifact.manifest
    stats = outcome.stats
    windows = [
        window_json(r, served, similarity, check)
        for r, served, similarity, check in zip(
            outcome.results,
            _served(outcome),
            _similarity(outcome),
            _checks(outcome),
            strict=True,
        )
    ]
    skipped = [
        SkippedJSON(index=s.index, start_s=s.start_s, end_s=s.end_s, reason=s.reason)
        for s in stats.skipped
    ]
    return EmbedResponse(
        request_id=request_id,
        model=manifest.identity,
        route=outcome.route,
        providers=outcome.providers,
        fallback=outcome.fallback,
        strategies=dict(Counter(_served(outcome))),
        degraded=bool(outcome.degraded),
        zero_vector_windows=outcome.served.count(ZERO),
        routing_key_hash=outcome.routing_key_hash,
        duration_s=stats.duration_s,
        source_sample_rate=stats.info.sample_rate if stats.info else 0,
        sample_rate=manifest.sample_rate,
        window_s=outcome.window_s,
        hop_s=outcome.hop_s,
        embedding_dim=outcome.transform.out_dim(manifest.embedding_dim),
        reducer=(
            ReducerInfo.model_validate(outcome.transform.reducer.describe())
            if outcome.transform.reducer
            else None
        ),
        projection=(
            ProjectionInfo.model_validate(outcome.transform.projection.describe())
            if outcome.transform.projection
            else None
        ),
        windows=windows,
        skipped=skipped,
        timing=outcome.timing,
        species_filter=outcome.species_filter,
        verification=outcome.verification,
        classifier=outcome.classifier,
    )


def to_arrow(outcome: EmbedOutcome, request_id: str) -> bytes:
    """The CLI's Parquet columns plus ``strategy`` (what produced each window)."""
    manifest = outcome.artifact.manifest
    with_logits = any(r.logits is not None for r in outcome.results)
    n_classes = manifest.n_classes if with_logits else None
    header = to_response(outcome, request_id).model_dump(mode="json", exclude={"windows"})
    constants = outcome.transform.columns()
    dim = outcome.transform.out_dim(manifest.embedding_dim)
    base = results_schema(dim, n_classes, tuple(constants))
    schema = base.append(pa.field("strategy", pa.string()))
    verified = outcome.window_verification is not None
    for column in VERIFICATION_COLUMNS if verified else ():
        schema = schema.append(column)
    schema = schema.with_metadata({"sevensense": json.dumps(header)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        if outcome.results:
            table = results_table(outcome.results, base, constants)
            table = table.append_column("strategy", pa.array(_served(outcome), pa.string()))
            if verified:
                arrays = _verification_arrays(_checks(outcome))
                for column, array in zip(VERIFICATION_COLUMNS, arrays, strict=True):
                    table = table.append_column(column, array)
            writer.write_table(table.replace_schema_metadata(schema.metadata))
    return bytes(sink.getvalue().to_pybytes())
