"""The model registry: layout, resolution, and refusal of anything that does not verify."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from sevensense.artifacts.manifest import MANIFEST_NAME, load_manifest
from sevensense.artifacts.registry import ModelRef, ModelRegistry
from sevensense.errors import (
    ArtifactMissingError,
    ChecksumMismatchError,
    ContractMismatchError,
    ManifestError,
    ModelNotFoundError,
)
from sevensense.inference.sessions import SessionManager
from sevensense.settings import InferenceSettings


@pytest.fixture
def copy_registry(tmp_path: Path, perch_artifact) -> ModelRegistry:  # type: ignore[no-untyped-def]
    root = tmp_path / "models"
    src = perch_artifact.directory
    dst = root / "perch-contract" / "1.0.0" / "base"
    shutil.copytree(src, dst)
    shutil.copytree(src.parents[2] / "perch-v2", root / "perch-v2")
    return ModelRegistry(root)


def _add_version(reg: ModelRegistry, version: str, variant: str = "base") -> Path:
    src = reg.root / "perch-contract" / "1.0.0" / "base"
    dst = reg.root / "perch-contract" / version / variant
    shutil.copytree(src, dst)
    data = json.loads((dst / MANIFEST_NAME).read_text())
    data.update(version=version, variant=variant)
    (dst / MANIFEST_NAME).write_text(json.dumps(data))
    return dst


def test_ref_parsing() -> None:
    assert ModelRef.parse("perch-v2") == ModelRef("perch-v2")
    assert ModelRef.parse("perch-v2:2.0.0:quantized") == ModelRef("perch-v2", "2.0.0", "quantized")
    for bad in ("", ":1", "a:b:c:d", "a::b"):
        with pytest.raises(ModelNotFoundError):
            ModelRef.parse(bad)


def test_lists_and_resolves_newest_version_and_base_variant(copy_registry: ModelRegistry) -> None:
    _add_version(copy_registry, "1.10.0")
    _add_version(copy_registry, "1.2.0")
    _add_version(copy_registry, "1.10.0", "quantized")
    keys = {a.key for a in copy_registry.artifacts()}
    assert ("perch-contract", "1.10.0", "quantized") in keys and len(keys) == 5
    assert copy_registry.resolve("perch-contract").manifest.version == "1.10.0"  # not "1.2.0"
    assert copy_registry.resolve("perch-contract").manifest.variant == "base"
    assert copy_registry.resolve("perch-contract:1.2.0").manifest.version == "1.2.0"
    q = copy_registry.resolve("perch-contract:1.10.0:quantized")
    assert q.manifest.variant == "quantized"
    # A profile asking for a variant a model lacks falls back to base unless named explicitly.
    assert (
        copy_registry.resolve("perch-contract:1.2.0", default_variant="quantized").manifest.variant
        == "base"
    )
    with pytest.raises(ModelNotFoundError):
        copy_registry.resolve("perch-contract:1.2.0:quantized")


def test_unknown_model_names_the_known_ones(copy_registry: ModelRegistry) -> None:
    with pytest.raises(ModelNotFoundError, match="perch-contract") as err:
        copy_registry.resolve("nightingale-v9")
    assert err.value.http_status == 404


def test_verify_accepts_the_built_artifact(copy_registry: ModelRegistry) -> None:
    copy_registry.verify(copy_registry.resolve("perch-contract"), use_cache=False)


def test_checksum_mismatch_is_refused_before_any_session(copy_registry: ModelRegistry) -> None:
    artifact = copy_registry.resolve("perch-contract")
    data = bytearray(artifact.model_path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte
    artifact.model_path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match="sha256"):
        copy_registry.verify(artifact, use_cache=False)
    sessions = SessionManager(copy_registry, InferenceSettings(providers=["cpu"]))
    with pytest.raises(ChecksumMismatchError):
        sessions.get("perch-contract")
    assert sessions.loaded() == []


def test_digest_is_kept_across_processes_but_not_past_a_rewrite(
    copy_registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The on-disk digest spares later processes the hashing; an in-place rewrite that keeps
    size and mtime still moves ctime, so the tampered file is hashed again and refused."""
    from sevensense.artifacts import checksum

    monkeypatch.setattr(checksum, "DIGEST_CACHE", tmp_path / "digests")
    artifact = copy_registry.resolve("perch-contract")
    path = artifact.model_path
    assert path.stat().st_size >= checksum.PERSIST_MIN_BYTES
    copy_registry.verify(artifact)
    assert [p.suffix for p in (tmp_path / "digests").iterdir()] == [".json"]
    monkeypatch.setattr(checksum, "_CACHE", {})  # as a new process starts
    assert checksum.sha256_file(path) == artifact.manifest.sha256
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(ChecksumMismatchError, match="does not match"):
        copy_registry.verify(artifact)


def test_size_mismatch_is_refused(copy_registry: ModelRegistry) -> None:
    artifact = copy_registry.resolve("perch-contract")
    with artifact.model_path.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ChecksumMismatchError, match="bytes"):
        copy_registry.verify(artifact, use_cache=False)


def test_contract_mismatch_names_the_tensor(copy_registry: ModelRegistry) -> None:
    path = copy_registry.root / "perch-contract" / "1.0.0" / "base" / MANIFEST_NAME
    data = json.loads(path.read_text())
    data["outputs"]["logits"]["name"] = "logits"  # the export calls it "label"
    data["outputs"]["embedding"]["shape"] = ["batch", 1280]
    path.write_text(json.dumps(data))
    with pytest.raises(ContractMismatchError) as err:
        copy_registry.verify(copy_registry.resolve("perch-contract"), use_cache=False)
    assert "'logits' missing" in err.value.message and "1280" in err.value.message


def test_catalogued_perch_without_weights_says_how_to_get_them(
    copy_registry: ModelRegistry,
) -> None:
    artifact = copy_registry.resolve("perch-v2")
    assert not artifact.present and artifact.manifest.sha256 is None
    with pytest.raises(ArtifactMissingError, match="models pull"):
        copy_registry.verify(artifact)


def test_malformed_manifests_are_typed_errors(tmp_path: Path) -> None:
    bad = tmp_path / "m" / "x" / "1" / "base"
    bad.mkdir(parents=True)
    (bad / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ManifestError, match="invalid manifest"):
        ModelRegistry(tmp_path / "m").artifacts()
    (bad / MANIFEST_NAME).write_text(json.dumps({"name": "x", "version": "1", "colour": "red"}))
    with pytest.raises(ManifestError) as err:
        load_manifest(bad / MANIFEST_NAME)
    assert "colour" in err.value.message  # unknown keys are rejected, not ignored


def test_manifest_directory_disagreement_is_refused(copy_registry: ModelRegistry) -> None:
    moved = copy_registry.root / "perch-contract" / "9.9.9"
    shutil.move(copy_registry.root / "perch-contract" / "1.0.0", moved)
    with pytest.raises(ManifestError, match="directory"):
        copy_registry.artifacts()


def test_concurrent_first_loads_share_one_session(copy_registry: ModelRegistry) -> None:
    from concurrent.futures import ThreadPoolExecutor

    sessions = SessionManager(copy_registry, InferenceSettings(providers=["cpu"]))
    with ThreadPoolExecutor(8) as pool:
        loaded = list(pool.map(lambda _: sessions.get("perch-contract"), range(16)))
    assert len({id(m) for m in loaded}) == 1
    assert len(sessions.loaded()) == 1
