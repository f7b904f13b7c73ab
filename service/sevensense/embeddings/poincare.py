"""The Poincaré ball (ADR-007 §3.3): the exponential map at the origin, and the distance.

The ball of curvature −c has radius 1/√c. ``curvature`` is read as c = |curvature|, so the
ADR's −1.0 and 1.0 name the same unit ball. Both functions keep float32 as float32 and
float64 as float64, and are written so that neither loses the answer at the edges: the
exponential map never divides by a vanishing norm (tanh(r)/r is formed as unit·tanh(r)),
and the distance uses arcosh(1 + 2s²) = 2·asinh(s), which neither cancels for near points
nor overflows for points at the boundary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from sevensense.embeddings.choices import DEFAULT_MAX_NORM
from sevensense.errors import RequestError


def _float(x: np.ndarray) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype in (np.float32, np.float64):
        return arr
    return arr.astype(np.float64)


def _c(curvature: float) -> float:
    c = abs(float(curvature))
    if not math.isfinite(c) or c == 0.0:
        raise RequestError(f"curvature must be a finite non-zero number, got {curvature!r}")
    return c


def _check_max_norm(max_norm: float) -> float:
    value = float(max_norm)
    if not 0.0 < value < 1.0:
        raise RequestError(f"max_norm must be in (0, 1), got {max_norm!r}")
    return value


def _unit_and_norm(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows scaled to norm 1 (zero rows stay zero) and their norms, without the overflow or
    underflow that squaring very large or very small components would cause."""
    scale = np.max(np.abs(x), axis=-1, keepdims=True)
    safe = np.where(scale > 0, scale, np.ones_like(scale))
    scaled = x / safe
    inner = np.sqrt(np.sum(scaled * scaled, axis=-1, keepdims=True))
    norm = scale * inner
    unit = np.where(inner > 0, scaled / np.where(inner > 0, inner, np.ones_like(inner)), 0)
    return unit.astype(x.dtype, copy=False), norm.astype(x.dtype, copy=False)


def to_poincare(
    x: np.ndarray, *, curvature: float = 1.0, max_norm: float = DEFAULT_MAX_NORM
) -> np.ndarray:
    """exp₀(v) = tanh(√c‖v‖) · v / (√c‖v‖), its norm clamped to ``max_norm``/√c (the ADR's
    clamp, which is ``max_norm`` itself on the unit ball); the zero vector maps to the origin.

    Note that L2-normalised embeddings all land on one sphere, of radius tanh(√c)/√c
    (0.7616 for c = 1): the map keeps their directions, so cosine order is unchanged.
    """
    c = _c(curvature)
    limit = _check_max_norm(max_norm)
    arr = _float(x)
    unit, norm = _unit_and_norm(arr)
    sqrt_c = math.sqrt(c)
    radius = np.minimum(np.tanh(sqrt_c * norm.astype(np.float64)), limit) / sqrt_c
    return np.asarray(unit * radius.astype(arr.dtype), dtype=arr.dtype)


def poincare_distance(u: np.ndarray, v: np.ndarray, *, curvature: float = 1.0) -> np.ndarray:
    """d(u, v) = (2/√c) · asinh(√c‖u − v‖ / √((1 − c‖u‖²)(1 − c‖v‖²))), over the last axis,
    broadcasting the others (``u[None, :]`` against ``v[n, d]`` gives ``[n]``).

    Points on or beyond the boundary are treated as just inside it (norm 1 − ε of the
    dtype), so the answer is large but finite.
    """
    c = _c(curvature)
    a, b = _float(u), _float(v)
    dtype = np.result_type(a, b)
    a, b = a.astype(dtype, copy=False), b.astype(dtype, copy=False)
    sqrt_c = dtype.type(math.sqrt(c))
    edge = dtype.type(1.0) - np.finfo(dtype).eps

    def gap(p: np.ndarray) -> np.ndarray:
        _, n = _unit_and_norm(p)
        r = np.minimum(sqrt_c * n[..., 0], edge)
        return np.asarray((1 - r) * (1 + r))

    _, diff = _unit_and_norm(a - b)
    s = sqrt_c * diff[..., 0] / np.sqrt(gap(a) * gap(b))
    return np.asarray(2 / sqrt_c * np.arcsinh(s), dtype=dtype)


@dataclass(frozen=True)
class Projection:
    """A projection applied after the model (and after PCA, if any)."""

    kind: Literal["poincare"] = "poincare"
    curvature: float = 1.0
    max_norm: float = DEFAULT_MAX_NORM

    def __post_init__(self) -> None:
        _c(self.curvature)
        _check_max_norm(self.max_norm)

    def apply(self, x: np.ndarray) -> np.ndarray:
        return to_poincare(x, curvature=self.curvature, max_norm=self.max_norm)

    def distance(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return poincare_distance(u, v, curvature=self.curvature)

    @property
    def key(self) -> str:
        return f"{self.kind}-c{abs(self.curvature):g}-m{self.max_norm:g}"

    def describe(self) -> dict[str, object]:
        return {"kind": self.kind, "curvature": self.curvature, "max_norm": self.max_norm}
