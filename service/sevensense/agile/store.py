"""Classifiers as versioned artifacts beside the models, tied to the one index space whose
embeddings they were trained on.

Layout: ``<models_dir>/classifiers/<name>/<version>/{head.json, classifier.json,
head.onnx}``: ``head.json`` is the manifest (not ``manifest.json``, so the model registry's
scan never takes a classifier for a model), ``classifier.json`` perch-hoplite's
``LinearClassifier`` file, ``head.onnx`` the same weights as an ONNX graph. Both files'
SHA-256 are checked before use, a version is never overwritten, and a classifier of one
space refuses embeddings of another (409 naming both).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sevensense.agile.heads import LinearHead, from_hoplite_json, hoplite_json, onnx_bytes
from sevensense.agile.train import TrainReport
from sevensense.artifacts.checksum import sha256_file
from sevensense.artifacts.registry import version_key
from sevensense.errors import (
    ChecksumMismatchError,
    ClassifierMismatchError,
    ClassifierNotFoundError,
    ManifestError,
    RequestError,
)
from sevensense.index.records import SpaceInfo, SpaceKey
from sevensense.storage.atomic import atomic_write

CLASSIFIERS_DIR = "classifiers"
MANIFEST_NAME = "head.json"
HOPLITE_NAME = "classifier.json"
ONNX_NAME = "head.onnx"
_SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class ClassifierManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    kind: Literal["linear"] = "linear"
    name: str
    version: str
    space: SpaceKey
    dim: int = Field(gt=0)
    classes: list[str] = Field(min_length=1)
    owner: str | None = Field(description="the tenant whose labels trained it; None: everyone's")
    index: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="of classifier.json")
    size_bytes: int = Field(gt=0)
    onnx_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="of head.onnx")
    onnx_size_bytes: int = Field(gt=0)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    report: TrainReport

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
class Classifier:
    manifest: ClassifierManifest
    head: LinearHead
    directory: Path

    @property
    def ref(self) -> str:
        return self.manifest.ref

    @property
    def onnx_path(self) -> Path:
        return self.directory / ONNX_NAME

    def check_space(self, key: SpaceKey) -> None:
        if key != self.manifest.space:
            raise ClassifierMismatchError(
                f"classifier {self.ref} was trained on the space {self.manifest.space}; "
                f"these embeddings are of {key}",
                classifier=self.ref,
                classifier_space=str(self.manifest.space),
                space=str(key),
            )


def parse_ref(ref: str) -> tuple[str, str | None]:
    name, _, version = ref.strip().partition(":")
    if not _SLUG.match(name) or (version and not _SLUG.match(version)):
        raise ClassifierNotFoundError(f"bad classifier reference {ref!r}; expected name[:version]")
    return name, version or None


def _visible(manifest: ClassifierManifest, tenant: str | None) -> bool:
    return tenant is None or manifest.owner in (None, tenant)


class ClassifierStore:
    def __init__(self, models_dir: Path) -> None:
        self.root = Path(models_dir) / CLASSIFIERS_DIR

    def _manifest(self, path: Path) -> ClassifierManifest:
        try:
            manifest = ClassifierManifest.model_validate(json.loads(path.read_text()))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise ManifestError(f"invalid classifier manifest {path}: {exc}") from exc
        if (manifest.name, manifest.version) != (path.parent.parent.name, path.parent.name):
            raise ManifestError(f"{path}: manifest says {manifest.ref}, its directory differs")
        return manifest

    def manifests(self, tenant: str | None = None) -> list[ClassifierManifest]:
        """Those the tenant may use (None: all)."""
        if not self.root.is_dir():
            return []
        found = [self._manifest(p) for p in sorted(self.root.glob(f"*/*/{MANIFEST_NAME}"))]
        return sorted(
            (m for m in found if _visible(m, tenant)),
            key=lambda m: (m.name, version_key(m.version)),
        )

    def resolve(self, ref: str, tenant: str | None = None) -> Classifier:
        """``name[:version]`` (newest by default), verified; another tenant's is unknown."""
        name, version = parse_ref(ref)
        candidates = [m for m in self.manifests(tenant) if m.name == name]
        if version is not None:
            candidates = [m for m in candidates if m.version == version]
        if not candidates:
            known = sorted({m.ref for m in self.manifests(tenant)})
            raise ClassifierNotFoundError(
                f"unknown classifier {ref!r}; known: {', '.join(known) or 'none'} "
                "(train one with `sevensense classifier train` or POST /classifiers)",
                classifier=ref,
            )
        return self._verified(max(candidates, key=lambda m: version_key(m.version)))

    def _verified(self, manifest: ClassifierManifest) -> Classifier:
        directory = self.root / manifest.name / manifest.version
        for file, digest, size in (
            (HOPLITE_NAME, manifest.sha256, manifest.size_bytes),
            (ONNX_NAME, manifest.onnx_sha256, manifest.onnx_size_bytes),
        ):
            path = directory / file
            if not path.is_file():
                raise ClassifierNotFoundError(f"classifier {manifest.ref}: {path} is missing")
            actual = sha256_file(path)
            if path.stat().st_size != size or actual != digest:
                raise ChecksumMismatchError(
                    f"classifier {manifest.ref}: {file} sha256 {actual} does not match the "
                    f"manifest's {digest}",
                    expected=digest,
                    actual=actual,
                )
        head = from_hoplite_json((directory / HOPLITE_NAME).read_text())
        if head.dim != manifest.dim or list(head.classes) != manifest.classes:
            raise ManifestError(f"classifier {manifest.ref}: weights do not match its manifest")
        return Classifier(manifest, head, directory)

    def next_version(self, name: str) -> str:
        numbers = [
            int(m.version) for m in self.manifests() if m.name == name and m.version.isdigit()
        ]
        return str(max(numbers, default=0) + 1)

    def save(
        self,
        head: LinearHead,
        *,
        name: str,
        space: SpaceInfo,
        owner: str | None,
        index: str,
        report: TrainReport,
    ) -> Classifier:
        """A new version, never over an old one, then verified as any reader would."""
        version = self.next_version(name) if _SLUG.match(name) else "1"
        directory = self.root / name / version
        if (directory / MANIFEST_NAME).exists():
            raise RequestError(f"classifier {name}:{version} exists already")
        from sevensense.index.hoplite import model_config  # usearch: only when saving

        payload = hoplite_json(head, model_config(space)).encode()
        graph = onnx_bytes(head, f"{name}:{version}")
        try:
            manifest = ClassifierManifest(
                name=name,
                version=version,
                space=space.key,
                dim=head.dim,
                classes=list(head.classes),
                owner=owner,
                index=index,
                sha256=hashlib.sha256(payload).hexdigest(),
                size_bytes=len(payload),
                onnx_sha256=hashlib.sha256(graph).hexdigest(),
                onnx_size_bytes=len(graph),
                report=report,
            )
        except ValidationError as exc:
            raise RequestError(f"cannot name a classifier {name!r}: {exc}") from exc
        atomic_write(directory / HOPLITE_NAME, payload, mode=0o644)
        atomic_write(directory / ONNX_NAME, graph, mode=0o644)
        atomic_write(
            directory / MANIFEST_NAME,
            (manifest.model_dump_json(indent=2) + "\n").encode(),
            mode=0o644,
        )
        return self._verified(manifest)


def scores(classifier: Classifier, key: SpaceKey, embeddings: np.ndarray) -> np.ndarray:
    """Logits [n, C] of embeddings of ``key`` (409 for another space)."""
    classifier.check_space(key)
    return classifier.head(embeddings)
