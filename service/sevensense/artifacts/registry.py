"""The local model registry: ``models/<name>/<version>/<variant>/{manifest.json,model.onnx}``.

Resolution accepts ``name[:version][:variant]``; the newest version and the ``base`` variant
are the defaults. Nothing reaches ONNX Runtime before :meth:`ModelRegistry.verify` has
checked size and SHA-256 against the manifest, and the graph's input/output contract is
checked by the same call with ``onnx`` (registering, ``models verify``) or, when a model is
loaded to run, on the session's own inputs and outputs (:func:`contract_problems`), which
spares every command ``onnx``'s import and a second parse of the file.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.version import InvalidVersion, Version

from sevensense.artifacts.checksum import matches_hint, sha256_file
from sevensense.artifacts.manifest import (
    MANIFEST_NAME,
    MODEL_FILE,
    ModelKind,
    ModelManifest,
    TensorSpec,
    load_manifest,
)
from sevensense.errors import (
    ArtifactMissingError,
    ChecksumMismatchError,
    ContractMismatchError,
    ManifestError,
    ModelNotFoundError,
)

if TYPE_CHECKING:
    import onnx


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str | None = None
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        parts = [p.strip() for p in text.split(":")]
        if not parts[0] or len(parts) > 3 or any(not p for p in parts):
            raise ModelNotFoundError(
                f"bad model reference {text!r}; expected name[:version][:variant]"
            )
        return cls(parts[0], *(parts[1:] + [None] * (3 - len(parts))))

    def __str__(self) -> str:
        return ":".join(p for p in (self.name, self.version, self.variant) if p)


@dataclass(frozen=True)
class Artifact:
    manifest: ModelManifest
    directory: Path

    @property
    def model_path(self) -> Path:
        return self.directory / MODEL_FILE

    @property
    def present(self) -> bool:
        return self.model_path.is_file()

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.manifest.name, self.manifest.version, self.manifest.variant)


def version_key(version: str) -> tuple[int, Version | str]:
    """The one ordering of versions: PEP 440 versions, anything else before them by text."""
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


def sorted_versions(versions: Iterable[str]) -> list[str]:
    return sorted(versions, key=version_key)


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    dims: list[int | str] = []
    for d in value_info.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    return dims


def _shape_ok(expected: list[int | str], actual: list[int | str]) -> bool:
    if len(expected) != len(actual):
        return False
    return all(not isinstance(e, int) or e == a for e, a in zip(expected, actual, strict=True))


def contract_problems(
    inputs: dict[str, list[int | str]], outputs: dict[str, list[int | str]], manifest: ModelManifest
) -> list[str]:
    """What differs between a graph's declared inputs/outputs (name -> dims) and the manifest."""
    problems: list[str] = []

    def _check(kind: str, table: dict[str, list[int | str]], spec: TensorSpec) -> None:
        if spec.name not in table:
            problems.append(f"{kind} {spec.name!r} missing (graph has {sorted(table)})")
            return
        actual = table[spec.name]
        if not _shape_ok(spec.shape, actual):
            problems.append(f"{kind} {spec.name!r} has shape {actual}, manifest says {spec.shape}")

    _check("input", inputs, manifest.input)
    for role, spec in manifest.outputs.items():
        _check(f"output[{role.value}]", outputs, spec)
    return problems


def raise_on_problems(manifest: ModelManifest, problems: list[str]) -> None:
    if problems:
        raise ContractMismatchError(
            f"{manifest.identity}: model does not match its manifest: " + "; ".join(problems),
            problems=problems,
        )


def check_contract(model_path: Path, manifest: ModelManifest) -> None:
    """Compare the graph's declared I/O with the manifest, without loading the weights."""
    import onnx  # only when models are registered: every command would pay ~0.1 s for it

    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:
        raise ContractMismatchError(f"{model_path} is not a readable ONNX model: {exc}") from exc
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = {i.name: _dims(i) for i in graph.input if i.name not in initializers}
    outputs = {o.name: _dims(o) for o in graph.output}
    raise_on_problems(manifest, contract_problems(inputs, outputs, manifest))


class ModelRegistry:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def artifacts(self, kind: ModelKind | None = None) -> list[Artifact]:
        """Every artifact on disk, or only those of one ``kind``."""
        found: list[Artifact] = []
        if not self.root.is_dir():
            return found
        for path in sorted(self.root.glob(f"*/*/*/{MANIFEST_NAME}")):
            manifest = load_manifest(path)
            variant_dir = path.parent
            expected = (variant_dir.parent.parent.name, variant_dir.parent.name, variant_dir.name)
            if (manifest.name, manifest.version, manifest.variant) != expected:
                raise ManifestError(
                    f"{path}: manifest says {manifest.identity}, its directory says "
                    f"{':'.join(expected)}"
                )
            if kind is None or manifest.kind == kind:
                found.append(Artifact(manifest, variant_dir))
        return found

    def resolve(
        self,
        ref: str | ModelRef,
        *,
        default_variant: str = "base",
        artifacts: list[Artifact] | None = None,
        kind: ModelKind | None = "audio",
    ) -> Artifact:
        """``artifacts`` lets a caller resolve against its own cached scan of the disk.

        Only ``kind`` models resolve (audio by default, so that every path that embeds
        sound refuses a range model by name); ``kind=None`` resolves any.
        """
        ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
        scanned = self.artifacts() if artifacts is None else artifacts
        listing = [a for a in scanned if kind is None or a.manifest.kind == kind]
        candidates = [a for a in listing if a.manifest.name == ref.name]
        other = next((a for a in scanned if a.manifest.name == ref.name), None)
        if not candidates and other is not None:
            raise ModelNotFoundError(
                f"{ref.name!r} is a {other.manifest.kind} model; only {kind} models fit here",
                model=str(ref),
            )
        if not candidates:
            known = sorted({a.manifest.name for a in listing})
            raise ModelNotFoundError(
                f"unknown model {ref.name!r}; known models: {', '.join(known) or 'none'}"
                f" (run `sevensense models build`?)",
                model=str(ref),
            )
        if ref.version:
            candidates = [a for a in candidates if a.manifest.version == ref.version]
        variant = ref.variant or default_variant
        with_variant = [a for a in candidates if a.manifest.variant == variant]
        if not with_variant and ref.variant is None:
            with_variant = [a for a in candidates if a.manifest.variant == "base"]
        if not with_variant:
            raise ModelNotFoundError(f"no artifact matches {ref} (variant {variant!r})")
        return max(with_variant, key=lambda a: version_key(a.manifest.version))

    def verify(self, artifact: Artifact, *, use_cache: bool = True, contract: bool = True) -> None:
        """Size, digest and (unless ``contract`` is off, for a caller that checks the
        session's I/O itself) the I/O contract; raises a typed error naming what differs."""
        manifest = artifact.manifest
        if not artifact.present:
            raise ArtifactMissingError(
                f"{manifest.identity}: weights not present at {artifact.model_path}"
                + (" (run `sevensense models pull`)" if manifest.source.startswith("http") else "")
            )
        size = artifact.model_path.stat().st_size
        if size != manifest.size_bytes:
            raise ChecksumMismatchError(
                f"{manifest.identity}: {artifact.model_path} is {size} bytes, "
                f"manifest says {manifest.size_bytes}",
            )
        digest = sha256_file(artifact.model_path, use_cache=use_cache)
        if manifest.sha256 is not None and digest != manifest.sha256:
            raise ChecksumMismatchError(
                f"{manifest.identity}: sha256 {digest} does not match manifest {manifest.sha256}",
                expected=manifest.sha256,
                actual=digest,
            )
        if manifest.sha256 is None and not (
            manifest.sha256_hint and matches_hint(digest, manifest.sha256_hint)
        ):
            raise ChecksumMismatchError(
                f"{manifest.identity}: no pinned sha256 and the digest {digest} does not match "
                f"the published hint {manifest.sha256_hint!r}"
            )
        if contract:
            check_contract(artifact.model_path, manifest)

    def register(
        self,
        model_path: Path,
        manifest: ModelManifest,
        *,
        extra_files: dict[str, Path] | None = None,
        move: bool = False,
    ) -> Artifact:
        """Place a model and its manifest in the layout, then verify the placed copy."""
        target = self.root / manifest.name / manifest.version / manifest.variant
        target.mkdir(parents=True, exist_ok=True)
        dest = target / MODEL_FILE
        if model_path.resolve() != dest.resolve():
            tmp = dest.with_suffix(".onnx.partial")
            if move:
                shutil.move(str(model_path), tmp)
            else:
                shutil.copyfile(model_path, tmp)
            tmp.replace(dest)
        for name, src in (extra_files or {}).items():
            if src.resolve() != (target / name).resolve():
                shutil.copyfile(src, target / name)
        manifest.dump(target / MANIFEST_NAME)
        artifact = Artifact(manifest, target)
        self.verify(artifact, use_cache=False)
        return artifact
