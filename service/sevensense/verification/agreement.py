"""Agreement between a model and BirdNET on one window, as ADR-007 §7 defines it.

agreement = |top-5(primary) ∩ top-5(BirdNET)| / 5, both top-5s taken over the classes the
species map pairs (a class only one model has can never agree, so it must not crowd the
other out of a top 5). A window counts only where BirdNET's best mapped score reaches
``birdnet_threshold``: below it BirdNET hears no bird it knows, and its top 5 is noise, so
the agreement is ``None`` with the reason. A discrepancy is a species one model scores at
least ``discrepancy_threshold`` that the other does not have in its top 5; both scores are
reported. Scores are probabilities (sigmoid of the logits). Pure functions only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

from sevensense.verification.alignment import Aligner, centre_s
from sevensense.verification.species_map import SpeciesMap

TOP = 5
GOOD = 0.8  # the share of windows at or above this is reported (Appendix B: "> 80 %")

# Why a window has no agreement.
NO_VERIFIER_WINDOW = "no_verifier_window"  # no BirdNET window centred in it (silent, skipped)
BELOW_THRESHOLD = "verifier_below_threshold"
NO_MAPPED_CLASSES = "no_mapped_classes"
NO_PRIMARY_SCORES = "no_primary_scores"
UNAVAILABLE = "verifier_unavailable"
TRIVIAL = "primary_is_verifier"

# Why a request has no verification, or none over any window.
NO_WINDOWS = "no_windows: every window was skipped as silent, or the audio is empty"
DISABLED = "verification is disabled in this profile (verification.enable_birdnet = false)"


class ScoredSpecies(BaseModel):
    species: str
    score: float


class Discrepancy(BaseModel):
    species: str
    flagged_by: Literal["primary", "verifier"] = Field(
        description="the model scoring it at least discrepancy_threshold"
    )
    primary_score: float
    verifier_score: float


class WindowVerification(BaseModel):
    """What BirdNET said about one primary window, and how far the two agree."""

    agreement: float | None = Field(description="top-5 overlap / 5; null with a reason")
    reason: str | None = None
    verifier_windows: int = Field(0, description="BirdNET windows pooled for this window")
    verifier_best: float | None = Field(None, description="BirdNET's best mapped score")
    verifier_top5: list[ScoredSpecies] = Field(default_factory=list)
    primary_top5: list[ScoredSpecies] = Field(
        default_factory=list, description="the primary model's top 5 among mapped classes"
    )
    discrepancies: list[Discrepancy] = Field(default_factory=list)

    # No return annotation on purpose: with one, pydantic documents the body as a bare object.
    @model_serializer(mode="wrap")
    def _keep_null_agreement(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        """``agreement: null`` is an answer (with its reason), so it survives exclude_none."""
        data: dict[str, Any] = handler(self)
        data.setdefault("agreement", None)
        return data


class AgreementSummary(BaseModel):
    windows: int = Field(description="windows compared")
    counted: int = Field(description="windows with an agreement (BirdNET above threshold)")
    mean: float | None = Field(None, description="mean agreement over counted windows")
    share_ge_0_8: float | None = Field(None, description="share of counted windows >= 0.8")
    discrepancies: int = 0
    null_reasons: dict[str, int] = Field(default_factory=dict)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0))), dtype=np.float32)


def _top(scores: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """Indices (into ``scores``) of the k best among ``candidates``, best first."""
    if candidates.size == 0:
        return candidates
    values = scores[candidates]
    k = min(k, candidates.size)
    part = np.argpartition(-values, k - 1)[:k]
    order = part[np.argsort(-values[part], kind="stable")]
    return candidates[order]


def compare_window(
    primary: np.ndarray | None,
    verifier: np.ndarray | None,
    species_map: SpeciesMap,
    *,
    birdnet_threshold: float,
    discrepancy_threshold: float,
    verifier_windows: int = 1,
) -> WindowVerification:
    """``primary``/``verifier``: probabilities over each model's own classes."""
    names = species_map.verifier_labels
    to_primary = species_map.to_primary
    mapped_v = species_map.verifier_mapped
    if mapped_v.size == 0:
        return WindowVerification(agreement=None, reason=NO_MAPPED_CLASSES)
    if verifier is None:
        return WindowVerification(agreement=None, reason=NO_VERIFIER_WINDOW)
    v_top = _top(verifier, mapped_v, TOP)
    v_list = [ScoredSpecies(species=names[j], score=float(verifier[j])) for j in v_top]
    best = float(verifier[v_top[0]])
    if primary is None:
        return WindowVerification(
            agreement=None,
            reason=NO_PRIMARY_SCORES,
            verifier_windows=verifier_windows,
            verifier_best=best,
            verifier_top5=v_list,
        )
    # The primary's scores moved onto the verifier's class index (mapped classes only).
    on_v = np.zeros(len(names), dtype=np.float32)
    on_v[mapped_v] = primary[to_primary[mapped_v]]
    p_top = _top(on_v, mapped_v, TOP)
    p_list = [ScoredSpecies(species=names[j], score=float(on_v[j])) for j in p_top]
    p_set, v_set = set(p_top.tolist()), set(v_top.tolist())
    discrepancies = [
        Discrepancy(
            species=names[j],
            flagged_by=who,
            primary_score=float(on_v[j]),
            verifier_score=float(verifier[j]),
        )
        for who, scores, other in (("primary", on_v, v_set), ("verifier", verifier, p_set))
        for j in _top(scores, mapped_v[scores[mapped_v] >= discrepancy_threshold], len(names))
        if int(j) not in other
    ]
    counted = best >= birdnet_threshold
    return WindowVerification(
        agreement=len(p_set & v_set) / TOP if counted else None,
        reason=None if counted else BELOW_THRESHOLD,
        verifier_windows=verifier_windows,
        verifier_best=best,
        verifier_top5=v_list,
        primary_top5=p_list,
        discrepancies=discrepancies,
    )


def unavailable(reason: str = UNAVAILABLE) -> WindowVerification:
    return WindowVerification(agreement=None, reason=reason)


def summarize(windows: Iterable[WindowVerification]) -> AgreementSummary:
    values: list[float] = []
    reasons: Counter[str] = Counter()
    n = discrepancies = 0
    for w in windows:
        n += 1
        discrepancies += len(w.discrepancies)
        if w.agreement is None:
            reasons[w.reason or "unknown"] += 1
        else:
            values.append(w.agreement)
    return summary_of(values, n, discrepancies, reasons)


def summary_of(
    values: Sequence[float], windows: int, discrepancies: int, reasons: Counter[str]
) -> AgreementSummary:
    arr = np.asarray(values, dtype=np.float64)
    return AgreementSummary(
        windows=windows,
        counted=int(arr.size),
        mean=round(float(arr.mean()), 6) if arr.size else None,
        share_ge_0_8=round(float((arr >= GOOD - 1e-9).mean()), 6) if arr.size else None,
        discrepancies=discrepancies,
        null_reasons=dict(reasons),
    )


class RequestVerification(BaseModel):
    """A request's verification as a whole: which verifier, whether it could answer, and
    the agreement summary over its windows."""

    verifier: str | None = Field(description="the verifier model, name:version:variant")
    available: bool = Field(description="false: the verifier could not answer (reason says why)")
    reason: str | None = None
    trivial: bool = Field(
        False, description="the model is the verifier itself: nothing to compare, nothing computed"
    )
    mapped_classes: int = 0
    birdnet_threshold: float
    discrepancy_threshold: float
    summary: AgreementSummary | None = None


def verify_sequence(
    primary: Sequence[tuple[float, np.ndarray | None]],
    verifier: Sequence[tuple[int, float, np.ndarray]],
    *,
    primary_window_s: float,
    verifier_window_s: float,
    species_map: SpeciesMap,
    birdnet_threshold: float,
    discrepancy_threshold: float,
) -> list[WindowVerification]:
    """Primary windows ``(start_s, probabilities or None)`` and verifier windows ``(index,
    start_s, probabilities)``, both in time order → one verification per primary window."""
    aligner = Aligner(verifier_window_s)
    out: list[WindowVerification] = []
    pending = iter(verifier)
    nxt = next(pending, None)
    for start, scores in primary:
        end = start + primary_window_s
        while nxt is not None and centre_s(nxt[1], verifier_window_s) <= end + 1e-9:
            aligner.add(*nxt)
            nxt = next(pending, None)
        pooled, used = aligner.take(start, end)
        out.append(
            compare_window(
                scores,
                pooled,
                species_map,
                birdnet_threshold=birdnet_threshold,
                discrepancy_threshold=discrepancy_threshold,
                verifier_windows=len(used),
            )
        )
    return out
