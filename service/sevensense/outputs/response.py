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
from sevensense.inference.engine import WindowResult
from sevensense.outputs.writers import results_schema, results_table

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
    embedding_dim: int
    windows: list[WindowJSON]
    skipped: list[SkippedJSON] = Field(default_factory=list)
    timing: Timing
    species_filter: dict[str, object] | None = Field(
        None,
        description="the filter top-k was restricted by: kind (location/list), size, "
        "lat/lon/week/threshold",
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

    @property
    def degraded(self) -> list[str]:
        """The fallback strategies that produced some window, sorted."""
        return sorted({s for s in self.served if s in DEGRADED})


def _served(outcome: EmbedOutcome) -> list[str]:
    return outcome.served or [outcome.route] * len(outcome.results)


def _similarity(outcome: EmbedOutcome) -> list[float | None]:
    return outcome.similarity or [None] * len(outcome.results)


def to_response(outcome: EmbedOutcome, request_id: str) -> EmbedResponse:
    manifest = outcome.artifact.manifest
    stats = outcome.stats
    windows = [
        WindowJSON(
            index=r.index,
            start_s=round(r.start_s, 6),
            end_s=round(r.end_s, 6),
            padded_samples=r.padded_samples,
            embedding=r.embedding.tolist(),
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
        )
        for r, served, similarity in zip(
            outcome.results, _served(outcome), _similarity(outcome), strict=True
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
        embedding_dim=manifest.embedding_dim,
        windows=windows,
        skipped=skipped,
        timing=outcome.timing,
        species_filter=outcome.species_filter,
    )


def to_arrow(outcome: EmbedOutcome, request_id: str) -> bytes:
    """The CLI's Parquet columns plus ``strategy`` (what produced each window)."""
    manifest = outcome.artifact.manifest
    with_logits = any(r.logits is not None for r in outcome.results)
    n_classes = manifest.n_classes if with_logits else None
    header = to_response(outcome, request_id).model_dump(mode="json", exclude={"windows"})
    base = results_schema(manifest.embedding_dim, n_classes)
    schema = base.append(pa.field("strategy", pa.string())).with_metadata(
        {"sevensense": json.dumps(header)}
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        if outcome.results:
            table = results_table(outcome.results, base)
            table = table.append_column("strategy", pa.array(_served(outcome), pa.string()))
            writer.write_table(table.replace_schema_metadata(schema.metadata))
    return bytes(sink.getvalue().to_pybytes())
