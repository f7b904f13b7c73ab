"""Scores from vectors, the same on every backend: cosine similarity, and the Poincaré
re-ranking of cosine candidates (ADR-007 §3.3: the ball's distance is too costly to index,
so the ANN structure finds candidates by angle and the geodesic distance orders them)."""

from __future__ import annotations

import numpy as np

from sevensense.embeddings.poincare import poincare_distance
from sevensense.index.records import Metric

POINCARE_CANDIDATES = 4  # x k cosine candidates re-ranked by the ball's distance


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to norm 1 (zero rows stay zero), float32."""
    arr = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(arr, axis=-1, keepdims=True)
    return np.where(norms > 0, arr / np.where(norms > 0, norms, 1.0), 0.0).astype(np.float32)


def candidates(k: int, metric: Metric) -> int:
    return max(k * POINCARE_CANDIDATES, 50) if metric == "poincare" else k


def rank(
    query: np.ndarray,
    vectors: np.ndarray,
    k: int,
    metric: Metric,
    curvature: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positions into ``vectors``, scores, distances) of the best ``k``, best first.

    Cosine: score = cos, distance = 1 - cos. Poincaré: the best ``candidates(k)`` by cosine,
    re-ordered by the geodesic distance d, score = 1 / (1 + d)."""
    if len(vectors) == 0:
        empty = np.zeros(0)
        return empty.astype(np.int64), empty, empty
    vecs = np.asarray(vectors, dtype=np.float32)
    q = np.asarray(query, dtype=np.float32)
    cos = unit(vecs) @ unit(q)
    take = min(candidates(k, metric), len(vecs))
    top = np.argpartition(-cos, take - 1)[:take] if take < len(vecs) else np.arange(len(vecs))
    top = top[np.lexsort((top, -cos[top]))]
    if metric == "cosine":
        best = top[:k]
        return best, cos[best].astype(np.float64), (1.0 - cos[best]).astype(np.float64)
    dist = poincare_distance(
        q[None, :].astype(np.float64), vecs[top].astype(np.float64), curvature=curvature
    )
    order = np.lexsort((top, dist))[:k]
    best = top[order]
    d = np.asarray(dist[order], dtype=np.float64)
    return best, 1.0 / (1.0 + d), d
