"""PCA reducers as versioned artifacts, tied to the one model whose embeddings they fit.

Layout beside the models: ``<models_dir>/reducers/<name>/<version>/{reducer.json,
reducer.npz}``. The manifest is ``reducer.json`` (not ``manifest.json``) so the model
registry's scan never mistakes a reducer for a model. As with models, nothing is used
before the file's SHA-256 has been checked against its manifest, and a reducer fitted on
another model's embeddings (name, version or SHA-256 differ) is refused: its axes would
mean nothing for them.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sevensense.artifacts.checksum import sha256_file
from sevensense.artifacts.registry import version_key
from sevensense.embeddings.pca import PCA
from sevensense.errors import (
    ChecksumMismatchError,
    ManifestError,
    ReducerMismatchError,
    ReducerNotFoundError,
    RequestError,
)
from sevensense.storage.atomic import atomic_write

REDUCERS_DIR = "reducers"
MANIFEST_NAME = "reducer.json"
DATA_NAME = "reducer.npz"
_SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class ReducerManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    kind: Literal["pca"] = "pca"
    name: str
    version: str
    model_name: str
    model_version: str
    model_variant: str
    model_sha256: str | None = Field(description="of the model.onnx the vectors came from")
    in_dim: int = Field(gt=0)
    out_dim: int = Field(gt=0)
    n_windows: int = Field(gt=0, description="vectors the PCA was fitted on")
    explained_variance: float = Field(ge=0.0, le=1.0, description="fraction of variance kept")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="of reducer.npz")
    size_bytes: int = Field(gt=0)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    sources: list[str] = Field(default_factory=list, description="what it was fitted on")

    @field_validator("name", "version")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _SLUG.match(value):
            raise ValueError(f"{value!r} must be lowercase letters, digits, '.', '_' or '-'")
        return value

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class Reducer:
    manifest: ReducerManifest
    pca: PCA
    directory: Path

    @property
    def ref(self) -> str:
        return self.manifest.ref

    def describe(self) -> dict[str, object]:
        m = self.manifest
        return {
            "name": m.name,
            "version": m.version,
            "sha256": m.sha256,
            "in_dim": m.in_dim,
            "out_dim": m.out_dim,
            "explained_variance": m.explained_variance,
        }


def check_reducer_for(
    reducer: Reducer, model_name: str, model_version: str, model_sha256: str | None
) -> None:
    """Refuse a reducer fitted on another model's vectors (name, version or SHA-256)."""
    m = reducer.manifest
    problems = []
    if (m.model_name, m.model_version) != (model_name, model_version):
        problems.append(
            f"it was fitted on {m.model_name}:{m.model_version}, not {model_name}:{model_version}"
        )
    elif m.model_sha256 and model_sha256 and m.model_sha256 != model_sha256:
        problems.append(
            f"it was fitted on a model file with sha256 {m.model_sha256[:12]}…, "
            f"this one is {model_sha256[:12]}…"
        )
    if problems:
        raise ReducerMismatchError(
            f"reducer {m.ref} does not fit this model: {problems[0]}; "
            f"fit one with `sevensense reduce fit --model {model_name}:{model_version}`",
            reducer=m.ref,
            model=f"{model_name}:{model_version}",
        )


def _parse_ref(ref: str) -> tuple[str, str | None]:
    name, _, version = ref.strip().partition(":")
    bad_version = bool(version) and (":" in version or not _SLUG.match(version))
    if not _SLUG.match(name) or bad_version:
        raise ReducerNotFoundError(f"bad reducer reference {ref!r}; expected name[:version]")
    return name, version or None


def _npz_bytes(pca: PCA) -> bytes:
    buf = io.BytesIO()
    np.savez(
        buf,
        mean=pca.mean,
        components=pca.components,
        explained_variance=pca.explained_variance,
        total_variance=np.float64(pca.total_variance),
        n_fitted=np.int64(pca.n_fitted),
    )
    return buf.getvalue()


def _load_npz(path: Path) -> PCA:
    """Cached by (path, size, mtime): the gateway resolves a reducer per request."""
    stat = path.stat()
    return _load_npz_cached(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _load_npz_cached(name: str, size: int, mtime_ns: int) -> PCA:
    path = Path(name)
    try:
        with np.load(path, allow_pickle=False) as data:
            return PCA(
                mean=np.asarray(data["mean"], dtype=np.float64),
                components=np.asarray(data["components"], dtype=np.float64),
                explained_variance=np.asarray(data["explained_variance"], dtype=np.float64),
                total_variance=float(data["total_variance"]),
                n_fitted=int(data["n_fitted"]),
            )
    except (OSError, KeyError, ValueError) as exc:
        raise ManifestError(f"{path} is not a readable reducer: {exc}") from exc


class ReducerStore:
    def __init__(self, models_dir: Path) -> None:
        self.root = Path(models_dir) / REDUCERS_DIR

    def _manifest(self, path: Path) -> ReducerManifest:
        try:
            manifest = ReducerManifest.model_validate(json.loads(path.read_text()))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise ManifestError(f"invalid reducer manifest {path}: {exc}") from exc
        expected = (path.parent.parent.name, path.parent.name)
        if (manifest.name, manifest.version) != expected:
            raise ManifestError(
                f"{path}: manifest says {manifest.ref}, its directory says {':'.join(expected)}"
            )
        return manifest

    def manifests(self) -> list[ReducerManifest]:
        if not self.root.is_dir():
            return []
        found = [self._manifest(p) for p in sorted(self.root.glob(f"*/*/{MANIFEST_NAME}"))]
        return sorted(found, key=lambda m: (m.name, version_key(m.version)))

    def resolve(self, ref: str, *, use_cache: bool = True) -> Reducer:
        """``name[:version]`` (newest version by default), verified: SHA-256, size, shapes."""
        name, version = _parse_ref(ref)
        candidates = [m for m in self.manifests() if m.name == name]
        if not candidates:
            known = sorted({m.name for m in self.manifests()})
            raise ReducerNotFoundError(
                f"unknown reducer {name!r}; known reducers: {', '.join(known) or 'none'} "
                "(make one with `sevensense reduce fit`)",
                reducer=ref,
            )
        if version is not None:
            candidates = [m for m in candidates if m.version == version]
            if not candidates:
                raise ReducerNotFoundError(f"reducer {name!r} has no version {version!r}")
        manifest = max(candidates, key=lambda m: version_key(m.version))
        return self._verified(manifest, use_cache=use_cache)

    def _verified(self, manifest: ReducerManifest, *, use_cache: bool) -> Reducer:
        directory = self.root / manifest.name / manifest.version
        data = directory / DATA_NAME
        if not data.is_file():
            raise ReducerNotFoundError(f"reducer {manifest.ref}: {data} is missing")
        size = data.stat().st_size
        if size != manifest.size_bytes:
            raise ChecksumMismatchError(
                f"reducer {manifest.ref}: {data} is {size} bytes, manifest says "
                f"{manifest.size_bytes}"
            )
        digest = sha256_file(data, use_cache=use_cache)
        if digest != manifest.sha256:
            raise ChecksumMismatchError(
                f"reducer {manifest.ref}: sha256 {digest} does not match manifest "
                f"{manifest.sha256}",
                expected=manifest.sha256,
                actual=digest,
            )
        pca = _load_npz(data)
        if pca.components.shape != (manifest.out_dim, manifest.in_dim) or pca.mean.shape != (
            manifest.in_dim,
        ):
            raise ManifestError(
                f"reducer {manifest.ref}: arrays {pca.components.shape} do not match the "
                f"manifest's {manifest.out_dim}×{manifest.in_dim}"
            )
        return Reducer(manifest, pca, directory)

    def next_version(self, name: str) -> str:
        numbers = [
            int(m.version) for m in self.manifests() if m.name == name and m.version.isdigit()
        ]
        return str(max(numbers, default=0) + 1)

    def save(
        self,
        pca: PCA,
        *,
        name: str,
        model_name: str,
        model_version: str,
        model_variant: str,
        model_sha256: str | None,
        version: str | None = None,
        sources: list[str] | None = None,
    ) -> Reducer:
        """Write a new reducer version (never over an existing one), then verify it."""
        version = version or self.next_version(name)
        directory = self.root / name / version
        if (directory / MANIFEST_NAME).exists():
            raise RequestError(f"reducer {name}:{version} exists already; artifacts are immutable")
        payload = _npz_bytes(pca)
        try:
            manifest = ReducerManifest(
                name=name,
                version=version,
                model_name=model_name,
                model_version=model_version,
                model_variant=model_variant,
                model_sha256=model_sha256,
                in_dim=pca.in_dim,
                out_dim=pca.out_dim,
                n_windows=pca.n_fitted,
                explained_variance=min(1.0, pca.kept_variance),
                sha256=hashlib.sha256(payload).hexdigest(),
                size_bytes=len(payload),
                sources=sources or [],
            )
        except ValidationError as exc:
            raise RequestError(f"cannot name a reducer {name}:{version}: {exc}") from exc
        atomic_write(directory / DATA_NAME, payload, mode=0o644)
        atomic_write(
            directory / MANIFEST_NAME,
            (manifest.model_dump_json(indent=2) + "\n").encode(),
            mode=0o644,
        )
        return self._verified(manifest, use_cache=False)
