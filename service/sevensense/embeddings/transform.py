"""The one transform between the model's embeddings and what is stored, answered or
indexed: an optional PCA reducer, then an optional projection. The CLI, the HTTP gateway,
the worker and the index all apply this object, so a vector means the same everywhere, and
its :attr:`VectorTransform.space_key` names the space it lives in.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from sevensense.artifacts.checksum import sha256_file
from sevensense.artifacts.registry import Artifact
from sevensense.embeddings.choices import DEFAULT_MAX_NORM, PROJECTIONS
from sevensense.embeddings.poincare import Projection
from sevensense.embeddings.reducers import Reducer, ReducerStore, check_reducer_for
from sevensense.errors import ReducerMismatchError, RequestError
from sevensense.inference.engine import WindowResult
from sevensense.settings import Settings


@dataclass(frozen=True)
class VectorTransform:
    reducer: Reducer | None = None
    projection: Projection | None = None

    @property
    def is_identity(self) -> bool:
        return self.reducer is None and self.projection is None

    @property
    def metric(self) -> str:
        return "poincare" if self.projection is not None else "cosine"

    @property
    def space_key(self) -> str:
        parts = []
        if self.reducer is not None:
            m = self.reducer.manifest
            parts.append(f"pca-{m.name}-{m.version}-{m.sha256[:12]}")
        if self.projection is not None:
            parts.append(self.projection.key)
        return "+".join(parts) or "full"

    def out_dim(self, in_dim: int) -> int:
        if self.reducer is None:
            return in_dim
        if in_dim != self.reducer.pca.in_dim:
            raise ReducerMismatchError(
                f"reducer {self.reducer.ref} takes {self.reducer.pca.in_dim}-d vectors, "
                f"not {in_dim}-d"
            )
        return self.reducer.pca.out_dim

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Float32 out. An all-zero row (a flagged zero-vector fallback) stays all zeros:
        centring would otherwise turn "no embedding" into a plausible-looking vector."""
        arr = np.asarray(x, dtype=np.float32)
        if self.is_identity:
            return arr
        zero = ~np.any(arr != 0, axis=-1, keepdims=True)
        out = arr
        if self.reducer is not None:
            out = self.reducer.pca.apply(out)
        if self.projection is not None:
            out = self.projection.apply(out)
        out = np.asarray(out, dtype=np.float32)
        return np.where(zero, np.float32(0.0), out).astype(np.float32, copy=False)

    def apply_result(self, result: WindowResult) -> WindowResult:
        if self.is_identity:
            return result
        return dataclasses.replace(result, embedding=self.apply(result.embedding))

    def apply_results(self, results: list[WindowResult]) -> list[WindowResult]:
        """The same windows with transformed embeddings; ``quality`` is kept, since it
        describes what the model itself produced."""
        if self.is_identity or not results:
            return results
        vectors = self.apply(np.stack([r.embedding for r in results]))
        return [dataclasses.replace(r, embedding=v) for r, v in zip(results, vectors, strict=True)]

    def columns(self) -> dict[str, str]:
        """The per-file constant columns of a transformed output (none for the identity)."""
        if self.is_identity:
            return {}
        return {
            "reducer": self.reducer.ref if self.reducer else "none",
            "projection": self.projection.key if self.projection else "none",
        }

    def describe(self) -> dict[str, object]:
        return {
            "reducer": self.reducer.describe() if self.reducer else None,
            "projection": self.projection.describe() if self.projection else None,
            "space_key": self.space_key,
        }


IDENTITY = VectorTransform()


def artifact_sha256(artifact: Artifact) -> str | None:
    """The model file's digest: the manifest's pin, else the file's own (cached) SHA-256."""
    if artifact.manifest.sha256 is not None:
        return artifact.manifest.sha256
    return sha256_file(artifact.model_path) if artifact.present else None


def load_transform(
    settings: Settings,
    model_name: str,
    model_version: str,
    model_sha256: str | None,
    reduce: str | None = None,
    project: str | None = None,
    *,
    curvature: float = 1.0,
    max_norm: float = DEFAULT_MAX_NORM,
) -> VectorTransform:
    """Resolve and verify ``reduce`` (``name[:version]``) for this model, and build the
    projection. Unknown reducer → ``ReducerNotFoundError``; one fitted on another model →
    ``ReducerMismatchError``; a damaged file → ``ChecksumMismatchError``."""
    reducer = None
    if reduce:
        reducer = ReducerStore(settings.models_dir).resolve(reduce)
        check_reducer_for(reducer, model_name, model_version, model_sha256)
    projection = None
    if project:
        if project not in PROJECTIONS:
            raise RequestError(
                f"unknown projection {project!r}; choose {', '.join(PROJECTIONS)}",
                project=project,
            )
        projection = Projection(curvature=curvature, max_norm=max_norm)
    return VectorTransform(reducer, projection)
