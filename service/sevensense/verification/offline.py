"""Offline verification: recordings in, per-window agreement with BirdNET out.

Each recording is decoded once (:func:`~sevensense.verification.streams.paired_windows`);
primary windows and 48-kHz BirdNET windows go to their own sessions in batches of the
profile's ``max_batch_size``; a bad recording is reported and the run goes on, as
``sevensense embed`` does. ``sevensense verify`` and the Appendix B check call
:func:`verify_recordings`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from sevensense.artifacts.manifest import OutputRole
from sevensense.artifacts.registry import Artifact, ModelRegistry
from sevensense.audio.pipeline import StreamStats
from sevensense.audio.windowing import Window
from sevensense.errors import ModelNotFoundError, RequestError, SevensenseError
from sevensense.inference.engine import EmbeddingEngine, EmbedOptions
from sevensense.inference.recordings import expand_paths
from sevensense.inference.sessions import LoadedModel
from sevensense.settings import VerificationSettings
from sevensense.verification.agreement import (
    GOOD,
    AgreementSummary,
    WindowVerification,
    compare_window,
    sigmoid,
    summary_of,
)
from sevensense.verification.alignment import Aligner
from sevensense.verification.defaults import DEFAULT_VERIFIER
from sevensense.verification.species_map import SpeciesMap, species_map_for
from sevensense.verification.streams import paired_windows


class WindowRow(BaseModel):
    """One Parquet row of ``sevensense verify``."""

    source: str
    window_index: int
    start_s: float
    end_s: float
    primary_model: str
    verifier_model: str
    verification: WindowVerification


class RecordingAgreement(BaseModel):
    source: str
    status: str = "pending"
    error: dict[str, Any] | None = None
    windows: int = 0
    counted: int = 0
    mean: float | None = None
    share_ge_0_8: float | None = None
    discrepancies: int = 0


class VerifyReport(BaseModel):
    primary: str
    against: str
    trivial: bool = False
    trivial_reason: str | None = None
    mapped_classes: int = 0
    birdnet_threshold: float
    discrepancy_threshold: float
    recordings: list[RecordingAgreement] = Field(default_factory=list)
    overall: AgreementSummary
    wall_s: float = 0.0

    def passed(self, min_mean: float = GOOD) -> bool | None:
        """Appendix B's "> 80 % top-5 agreement"; None when trivial or nothing counted."""
        if self.trivial or self.overall.mean is None:
            return None
        return self.overall.mean > min_mean


def resolve_verifier(registry: ModelRegistry, ref: str) -> Artifact:
    try:
        return registry.resolve(ref, default_variant="base")
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(
            f"unknown verifier {ref!r} (--against): {exc.message}", model=ref
        ) from None


def resolve_pair(engine: EmbeddingEngine, model: str, against: str) -> tuple[Artifact, Artifact]:
    """Both artifacts, or a typed error that says what is wrong with which."""
    registry = engine.registry
    primary = registry.resolve(model, default_variant=engine.settings.inference.model_variant)
    verifier = resolve_verifier(registry, against)
    for role, artifact in (("model", primary), ("verifier", verifier)):
        m = artifact.manifest
        if OutputRole.LOGITS not in m.outputs or m.labels is None:
            raise RequestError(f"{role} {m.identity} has no species scores (logits + labels)")
    return primary, verifier


def is_trivial(primary: Artifact, verifier: Artifact) -> bool:
    return primary.manifest.sha256 == verifier.manifest.sha256


def trivial_reason(primary: Artifact) -> str:
    return (
        f"{primary.manifest.identity} is the verifier itself: its agreement with itself is 1 "
        "by construction and says nothing, so none is computed"
    )


class _Recording:
    """Per-recording tallies while its windows stream past."""

    def __init__(self, report: RecordingAgreement) -> None:
        self.report = report
        self.values: list[float] = []
        self.reasons: Counter[str] = Counter()

    def add(self, v: WindowVerification) -> None:
        self.report.windows += 1
        self.report.discrepancies += len(v.discrepancies)
        if v.agreement is None:
            self.reasons[v.reason or "unknown"] += 1
        else:
            self.values.append(v.agreement)

    def close(self) -> None:
        s = summary_of(self.values, self.report.windows, self.report.discrepancies, self.reasons)
        self.report.counted, self.report.mean, self.report.share_ge_0_8 = (
            s.counted,
            s.mean,
            s.share_ge_0_8,
        )


def _chunks(
    pairs: Iterator[tuple[Window, list[Window]]], n: int
) -> Iterator[list[tuple[Window, list[Window]]]]:
    chunk: list[tuple[Window, list[Window]]] = []
    for pair in pairs:
        chunk.append(pair)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def logits_of(engine: EmbeddingEngine, model: LoadedModel, windows: Sequence[Window]) -> np.ndarray:
    batch = np.stack([w.samples for w in windows]).astype(np.float32, copy=False)
    return engine.run_batch(model, batch, [OutputRole.LOGITS])[OutputRole.LOGITS]


def verify_windows(
    engine: EmbeddingEngine,
    primary: Artifact,
    verifier: Artifact,
    species_map: SpeciesMap,
    source: Any,
    settings: VerificationSettings,
    stats: StreamStats | None = None,
) -> Iterator[tuple[Window, WindowVerification]]:
    """One recording, streamed: each primary window with its verification. Sessions load
    at the first window, so a recording that does not decode costs no model load."""
    p_config = engine.preprocess_config(primary.manifest)
    # BirdNET's own 3-s hop, whatever overlap the profile gives the primary model.
    v_config = engine.preprocess_config(
        verifier.manifest, EmbedOptions(overlap=verifier.manifest.default_overlap)
    )
    v_window_s = v_config.window_samples / v_config.sample_rate
    p_window_s = p_config.window_samples / p_config.sample_rate
    aligner = Aligner(v_window_s)
    pairs = paired_windows(source, p_config, v_config, stats or StreamStats(), StreamStats())
    for chunk in _chunks(pairs, engine.settings.inference.max_batch_size):
        p_model, v_model = engine.sessions.get(primary), engine.sessions.get(verifier)
        p_scores = sigmoid(logits_of(engine, p_model, [w for w, _ in chunk]))
        fresh = {v.index: v for _, vs in chunk for v in vs if not aligner.has(v.index)}
        if fresh:
            v_scores = sigmoid(logits_of(engine, v_model, list(fresh.values())))
            for row, v in enumerate(fresh.values()):
                aligner.add(v.index, v.start_s, v_scores[row])
        for i, (w, _) in enumerate(chunk):
            pooled, used = aligner.take(w.start_s, w.start_s + p_window_s)
            yield (
                w,
                compare_window(
                    p_scores[i],
                    pooled,
                    species_map,
                    birdnet_threshold=settings.birdnet_threshold,
                    discrepancy_threshold=settings.discrepancy_threshold,
                    verifier_windows=len(used),
                ),
            )


def verify_recordings(
    paths: Sequence[str | Path],
    *,
    model: str,
    against: str = DEFAULT_VERIFIER,
    engine: EmbeddingEngine | None = None,
    settings: VerificationSettings | None = None,
    sink: Callable[[WindowRow], None] | None = None,
) -> VerifyReport:
    engine = engine or EmbeddingEngine()
    settings = settings or engine.settings.verification
    started = time.perf_counter()
    primary_a, verifier_a = resolve_pair(engine, model, against)
    report = VerifyReport(
        primary=str(primary_a.manifest.identity),
        against=str(verifier_a.manifest.identity),
        birdnet_threshold=settings.birdnet_threshold,
        discrepancy_threshold=settings.discrepancy_threshold,
        overall=AgreementSummary(windows=0, counted=0),
    )
    if is_trivial(primary_a, verifier_a):
        report.trivial, report.trivial_reason = True, trivial_reason(primary_a)
        return report
    species_map = species_map_for(primary_a, verifier_a)
    report.mapped_classes = species_map.mapped
    if species_map.mapped == 0:
        raise RequestError(f"no class of {report.primary} maps to a class of {report.against}")
    values: list[float] = []
    reasons: Counter[str] = Counter()
    windows = discrepancies = 0
    for path in expand_paths(paths):
        tally = _Recording(RecordingAgreement(source=str(path)))
        report.recordings.append(tally.report)
        try:
            for w, v in verify_windows(engine, primary_a, verifier_a, species_map, path, settings):
                tally.add(v)
                if sink is not None:
                    sink(
                        WindowRow(
                            source=str(path),
                            window_index=w.index,
                            start_s=w.start_s,
                            end_s=w.end_s,
                            primary_model=report.primary,
                            verifier_model=report.against,
                            verification=v,
                        )
                    )
            tally.report.status = "ok"
        except SevensenseError as exc:
            tally.report.status = "partial" if tally.report.windows else "failed"
            tally.report.error = exc.to_dict()
        except Exception as exc:  # an unexpected bug must not end the whole run
            tally.report.status = "partial" if tally.report.windows else "failed"
            tally.report.error = {
                "code": "internal_error",
                "message": f"{type(exc).__name__}: {exc}",
            }
        tally.close()
        values.extend(tally.values)
        reasons.update(tally.reasons)
        windows += tally.report.windows
        discrepancies += tally.report.discrepancies
    report.overall = summary_of(values, windows, discrepancies, reasons)
    report.wall_s = round(time.perf_counter() - started, 3)
    return report
