"""PCA as ADR-007 §3.2 uses it: centre, project onto the leading axes, re-normalise (L2).

Fitted in float64 from the covariance (``eigh``), accumulated in blocks so a fit on many
windows never holds a float64 copy of them all. Vectors out are float32, like the model's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sevensense.errors import ReducerMismatchError, RequestError

ZERO_NORM_EPS = 1e-12
_BLOCK = 4096


@dataclass(frozen=True)
class PCA:
    mean: np.ndarray  # [d] float64
    components: np.ndarray  # [k, d] float64, orthonormal rows, by decreasing variance
    explained_variance: np.ndarray  # [k] float64, variance along each component
    total_variance: float
    n_fitted: int

    @property
    def in_dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def out_dim(self) -> int:
        return int(self.components.shape[0])

    @property
    def kept_variance(self) -> float:
        """Fraction of the fitted vectors' variance the kept axes carry."""
        if self.total_variance <= 0.0:
            return 1.0
        return float(self.explained_variance.sum() / self.total_variance)

    def project(self, x: np.ndarray) -> np.ndarray:
        """Centred coordinates on the kept axes, float64, not normalised."""
        arr = np.asarray(x, dtype=np.float64)
        if arr.shape[-1] != self.in_dim:
            raise ReducerMismatchError(
                f"vectors of width {arr.shape[-1]} given to a reducer fitted on width {self.in_dim}"
            )
        return np.asarray((arr - self.mean) @ self.components.T)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``[n, d]`` (or ``[d]``) → ``[n, k]`` float32, each row of norm 1.

        A row whose projection has norm ≤ 1e-12 becomes the unit vector e0, as the engine
        does for a dead embedding, so cosine search stays defined.
        """
        y = self.project(x)
        norms = np.linalg.norm(y, axis=-1, keepdims=True)
        ok = norms > ZERO_NORM_EPS
        out = np.where(ok, y / np.where(ok, norms, 1.0), 0.0)
        if not ok.all():
            e0 = np.zeros(self.out_dim)
            e0[0] = 1.0
            out = np.where(ok, out, e0)
        return out.astype(np.float32)


def fit_pca(x: np.ndarray, dim: int) -> PCA:
    """The ``dim`` leading principal axes of the rows of ``x``.

    Needs more rows than ``dim`` (with fewer, the trailing axes are arbitrary). Each
    component's sign is fixed (largest loading positive) so refits of the same data agree.
    """
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise RequestError(f"PCA needs a 2-D array of vectors, got shape {arr.shape}")
    n, d = arr.shape
    if not 1 <= dim <= d:
        raise RequestError(f"PCA dimension {dim} must be between 1 and the input width {d}")
    if n <= dim:
        raise RequestError(
            f"PCA to {dim} dimensions needs more than {dim} vectors; got {n} "
            "(embed more audio, or a smaller --dim)"
        )
    if not np.isfinite(arr).all():
        raise RequestError("PCA input holds NaN or infinite values")
    total = np.zeros(d, dtype=np.float64)
    for start in range(0, n, _BLOCK):
        total += arr[start : start + _BLOCK].sum(axis=0, dtype=np.float64)
    mean = total / n
    cov = np.zeros((d, d), dtype=np.float64)
    for start in range(0, n, _BLOCK):
        block = arr[start : start + _BLOCK].astype(np.float64) - mean
        cov += block.T @ block
    cov /= n - 1
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][:dim]
    components = vectors[:, order].T.copy()
    pivots = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(dim), pivots])
    components *= np.where(signs == 0, 1.0, signs)[:, None]
    explained = np.clip(values[order], 0.0, None)
    return PCA(
        mean=mean,
        components=components,
        explained_variance=explained,
        total_variance=float(np.clip(values, 0.0, None).sum()),
        n_fitted=n,
    )
