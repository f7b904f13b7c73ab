"""An embedding outcome as the partner receives it: JSON, or Arrow IPC for bulk clients.

The Arrow stream carries the same columns as the CLI's Parquet files (one schema for every
output of the platform) and the request-level fields as schema metadata ``sevensense``.
"""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa

from sevensense.outputs.writers import results_schema, results_table
from sevensense.serving.fallback import CACHE, QUANTIZED, ZERO
from sevensense.serving.gateway import EmbedOutcome
from sevensense.serving.wire import (
    EmbedResponse,
    SkippedJSON,
    Species,
    Timing,
    WindowJSON,
    WindowQuality,
)

DEGRADED = frozenset({QUANTIZED, CACHE, ZERO})


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
        degraded=any(s in DEGRADED for s in outcome.served),
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
        timing=Timing(**outcome.timing),
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
