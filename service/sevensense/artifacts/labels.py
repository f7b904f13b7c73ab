"""Class labels for a model's logits, checked against the logits width."""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

from sevensense.artifacts.manifest import LabelsSpec
from sevensense.errors import ManifestError

PACKAGE_PREFIX = "package:"


def _read_text(spec: LabelsSpec, artifact_dir: Path) -> str:
    if spec.file.startswith(PACKAGE_PREFIX):
        ref = resources.files("sevensense") / "data" / "labels" / spec.file[len(PACKAGE_PREFIX) :]
        return ref.read_text(encoding="utf-8")
    path = artifact_dir / spec.file
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"label file {path} is missing") from None


def parse_labels(text: str, fmt: str) -> list[str]:
    if fmt == "csv_index_label":
        rows = list(csv.DictReader(text.splitlines()))
        if rows and "label" not in rows[0]:
            raise ManifestError("label CSV needs a 'label' column")
        return [row["label"] for row in sorted(rows, key=lambda r: int(r.get("index") or 0))]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if fmt == "birdnet_txt":
        # "Scientific name_Common name": the scientific name is the key shared with Perch.
        return [line.split("_", 1)[0] for line in lines]
    return lines


def load_labels(spec: LabelsSpec, artifact_dir: Path) -> list[str]:
    labels = parse_labels(_read_text(spec, artifact_dir), spec.format)
    if len(labels) != spec.count:
        raise ManifestError(
            f"label file {spec.file} has {len(labels)} entries; the manifest says {spec.count}"
        )
    return labels
