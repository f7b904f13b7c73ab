"""``verify=true`` for a request answered later: the worker's deferred jobs run BirdNET in
process over the same upload, aligned and summarised as the gateway's live check is, so a
deferred answer carries the verification the live one would have."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from sevensense.artifacts.registry import Artifact
from sevensense.audio.decode import AudioSource
from sevensense.audio.pipeline import StreamStats, prepare_windows
from sevensense.errors import SevensenseError
from sevensense.inference.engine import EmbeddingEngine, EmbedOptions, WindowResult
from sevensense.settings import VerificationSettings
from sevensense.verification.agreement import (
    DISABLED,
    NO_MAPPED_CLASSES,
    NO_WINDOWS,
    UNAVAILABLE,
    RequestVerification,
    WindowVerification,
    sigmoid,
    summarize,
    verify_sequence,
)
from sevensense.verification.offline import (
    is_trivial,
    logits_of,
    resolve_verifier,
    trivial_reason,
)
from sevensense.verification.species_map import species_map_for


def _answer(settings: VerificationSettings, reason: str, **extra: Any) -> RequestVerification:
    return RequestVerification.model_validate(
        {
            "verifier": None,
            "available": False,
            "reason": reason,
            "birdnet_threshold": settings.birdnet_threshold,
            "discrepancy_threshold": settings.discrepancy_threshold,
            **extra,
        }
    )


def verify_results(
    engine: EmbeddingEngine,
    primary: Artifact,
    source: AudioSource,
    results: Sequence[WindowResult],
    primary_window_s: float,
    max_duration_s: float | None = None,
) -> tuple[RequestVerification, list[WindowVerification] | None]:
    """``results``: the request's windows with their raw logits; ``source``: its audio again,
    windowed at BirdNET's rate. Holds BirdNET's scores for the recording (26 KB a 3-s window)
    as the primary results are held."""
    settings = engine.settings.verification
    if not settings.enable_birdnet:
        return _answer(settings, DISABLED), None
    try:
        verifier = resolve_verifier(engine.registry, settings.model)
        ident = str(verifier.manifest.identity)
        if is_trivial(primary, verifier):
            reason = trivial_reason(primary)
            return _answer(settings, reason, available=True, trivial=True, verifier=ident), None
        species_map = species_map_for(primary, verifier)
    except SevensenseError as exc:
        return _answer(settings, f"{UNAVAILABLE}: {exc.message}"), None
    if species_map.mapped == 0:
        return _answer(settings, NO_MAPPED_CLASSES), None
    config = engine.preprocess_config(
        verifier.manifest,
        EmbedOptions(overlap=verifier.manifest.default_overlap, max_duration_s=max_duration_s),
    )
    model = engine.sessions.get(verifier)
    scored = []
    windows = prepare_windows(source, config, StreamStats())
    while batch := list(itertools.islice(windows, engine.settings.inference.max_batch_size)):
        for w, scores in zip(batch, sigmoid(logits_of(engine, model, batch)), strict=True):
            scored.append((w.index, w.start_s, scores))
    checks = verify_sequence(
        [(r.start_s, sigmoid(r.logits) if r.logits is not None else None) for r in results],
        scored,
        primary_window_s=primary_window_s,
        verifier_window_s=config.window_samples / config.sample_rate,
        species_map=species_map,
        birdnet_threshold=settings.birdnet_threshold,
        discrepancy_threshold=settings.discrepancy_threshold,
    )
    verification = RequestVerification(
        verifier=ident,
        available=True,
        reason=None if checks else NO_WINDOWS,
        mapped_classes=species_map.mapped,
        birdnet_threshold=settings.birdnet_threshold,
        discrepancy_threshold=settings.discrepancy_threshold,
        summary=summarize(checks),
    )
    return verification, checks
