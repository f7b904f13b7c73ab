"""Manifests of the artifacts this project knows how to obtain or build.

Perch 2.0's real export cannot be downloaded on the build machines; its manifest is
committed (``models/perch-v2/2.0.0/base/manifest.json``) so that ``models pull`` can fetch
and verify it wherever the network allows. The figures come from FACTS.md (size, the
published partial SHA-256, I/O contract) and perch-hoplite's loader (normalisation).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sevensense.artifacts.manifest import LabelsSpec, ModelManifest, OutputRole, TensorSpec
from sevensense.audio.normalize import NormalizationSpec

if TYPE_CHECKING:
    from sevensense.artifacts.registry import Artifact
    from sevensense.settings import Settings

PERCH_NAME = "perch-v2"
PERCH_VERSION = "2.0.0"

PERCH_V2_URL = "https://huggingface.co/justinchuby/Perch-onnx/resolve/main/perch_v2.onnx"
PERCH_V2_SIZE = 409_148_616
PERCH_V2_SHA256_HINT = "bf0c8467…cfa1f"
PERCH_LABELS_PACKAGED = "package:perch_v2_classes_inat2024_fsd50k_asa.csv"
PERCH_NUM_CLASSES = 14_795

BIRDNET_NAME = "birdnet-v2.4"
BIRDNET_VERSION = "2.4.0"
BIRDNET_RANGE_NAME = "birdnet-v2.4-range"
BIRDNET_RANGE_VERSION = "2.4.0"
PERCH_CONTRACT_NAME = "perch-contract"
PERCH_CONTRACT_VERSION = "1.0.0"


def perch_outputs() -> dict[OutputRole, TensorSpec]:
    """Perch 2.0's outputs by role; the logits tensor is called ``label`` in the export."""
    return {
        OutputRole.EMBEDDING: TensorSpec(name="embedding", shape=["batch", 1536]),
        OutputRole.SPATIAL_EMBEDDING: TensorSpec(
            name="spatial_embedding", shape=["batch", 16, 4, 1536]
        ),
        OutputRole.SPECTROGRAM: TensorSpec(name="spectrogram", shape=["batch", 500, 128]),
        OutputRole.LOGITS: TensorSpec(name="label", shape=["batch", PERCH_NUM_CLASSES]),
    }


def perch_v2_manifest() -> ModelManifest:
    return ModelManifest(
        name=PERCH_NAME,
        version=PERCH_VERSION,
        variant="base",
        description=(
            "Google Perch 2.0 bioacoustics model (EfficientNet-B3), ONNX export "
            "justinchuby/Perch-onnx perch_v2.onnx. 5 s at 32 kHz → 1536-d embedding."
        ),
        sha256=None,
        sha256_hint=PERCH_V2_SHA256_HINT,
        size_bytes=PERCH_V2_SIZE,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        source=PERCH_V2_URL,
        input=TensorSpec(name="inputs", shape=["batch", 160_000]),
        sample_rate=32_000,
        window_samples=160_000,
        default_overlap=0.5,
        outputs=perch_outputs(),
        labels=LabelsSpec(
            file=PERCH_LABELS_PACKAGED, format="csv_index_label", count=PERCH_NUM_CLASSES
        ),
        normalization=NormalizationSpec.perch(),
        min_onnxruntime="1.16.0",
        license="Apache-2.0 (Perch 2.0 weights and export)",
    )


def default_model(settings: Settings, artifacts: list[Artifact]) -> str:
    """Perch 2.0 when its weights are here (production), else the profile's model (BirdNET)."""
    configured = settings.serving.default_model
    if configured != "auto":
        return configured
    if any(a.manifest.name == PERCH_NAME and a.present for a in artifacts):
        return PERCH_NAME
    return settings.inference.model
