"""Embedding post-processing (ADR-007 §3.1): L2 normalisation, validation and top-k labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ZERO_NORM_EPS = 1e-12
NORM_RANGE = (0.99, 1.01)


@dataclass(frozen=True)
class EmbeddingQuality:
    norm: float
    raw_norm: float
    has_nan: bool
    has_inf: bool
    sparsity: float
    zero_norm: bool
    # Set by the quality monitor (sevensense.embeddings.quality): the raw norm is far from
    # this model version's rolling mean. A flag, not invalidity: the embedding is kept.
    anomalous_norm: bool = False

    @property
    def is_valid(self) -> bool:
        return (
            not self.has_nan
            and not self.has_inf
            and not self.zero_norm
            and NORM_RANGE[0] <= self.norm <= NORM_RANGE[1]
        )

    def flags(self) -> list[str]:
        out = []
        if self.has_nan:
            out.append("nan")
        if self.has_inf:
            out.append("inf")
        if self.zero_norm:
            out.append("zero_norm")
        if not (NORM_RANGE[0] <= self.norm <= NORM_RANGE[1]):
            out.append("norm_out_of_range")
        if self.anomalous_norm:
            out.append("anomalous_norm")
        return out


def l2_normalize(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise L2 normalisation; returns ``(normalised, raw_norms)``.

    A row with norm <= 1e-12 (the ADR's near-zero rule, e.g. a model fed pure silence that
    collapses) becomes the unit vector e0 so downstream cosine search stays defined; it is
    flagged ``zero_norm`` by :func:`assess` so it is never mistaken for a real embedding.
    """
    x = np.asarray(batch, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    out = np.empty_like(x)
    ok = norms > ZERO_NORM_EPS
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf rows are flagged by assess()
        out[ok] = x[ok] / norms[ok, None].astype(np.float32)
    if (~ok).any():
        out[~ok] = 0.0
        out[~ok, 0] = 1.0
    return out, norms


def assess(normalised: np.ndarray, raw_norm: float) -> EmbeddingQuality:
    """Validate one normalised embedding (ADR-007 §3.1 / Appendix B)."""
    has_nan = bool(np.isnan(normalised).any()) or bool(np.isnan(raw_norm))
    has_inf = bool(np.isinf(normalised).any()) or bool(np.isinf(raw_norm))
    finite = normalised[np.isfinite(normalised)]
    norm = float(np.sqrt(np.dot(finite, finite))) if finite.size else float("nan")
    sparsity = float(np.mean(np.abs(normalised) < 1e-6)) if normalised.size else 1.0
    zero = bool(raw_norm <= ZERO_NORM_EPS)
    return EmbeddingQuality(norm, float(raw_norm), has_nan, has_inf, sparsity, zero)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)


def top_k(
    logits: np.ndarray, labels: list[str] | None, k: int, allowed: np.ndarray | None = None
) -> list[tuple[str, float]]:
    """Highest-scoring classes of one window with sigmoid scores, best first; with
    ``allowed`` (a species filter's mask) only among those classes."""
    if allowed is not None:
        logits = np.where(allowed, logits, -np.inf)
        k = min(k, int(allowed.sum()))
    if k <= 0 or logits.size == 0:
        return []
    k = min(k, logits.shape[-1])
    idx = np.argpartition(-logits, k - 1)[:k]
    idx = idx[np.argsort(-logits[idx], kind="stable")]
    scores = sigmoid(logits[idx])
    names = [labels[i] if labels is not None else str(i) for i in idx]
    return [(n, float(s)) for n, s in zip(names, scores, strict=True)]
