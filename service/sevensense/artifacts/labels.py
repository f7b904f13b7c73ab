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


def parse_label_pairs(text: str, fmt: str) -> list[tuple[str, str]]:
    """(scientific, common) per class; formats without common names give ``""`` for them."""
    if fmt != "birdnet_txt":
        return [(label, "") for label in parse_labels(text, fmt)]
    pairs: list[tuple[str, str]] = []
    for line in text.splitlines():
        if line.strip():
            scientific, _, common = line.strip().partition("_")
            pairs.append((scientific, common))
    return pairs


def _checked_count(spec: LabelsSpec, n: int) -> None:
    if n != spec.count:
        raise ManifestError(
            f"label file {spec.file} has {n} entries; the manifest says {spec.count}"
        )


def load_labels(spec: LabelsSpec, artifact_dir: Path) -> list[str]:
    labels = parse_labels(_read_text(spec, artifact_dir), spec.format)
    _checked_count(spec, len(labels))
    return labels


def load_label_pairs(spec: LabelsSpec, artifact_dir: Path) -> list[tuple[str, str]]:
    pairs = parse_label_pairs(_read_text(spec, artifact_dir), spec.format)
    _checked_count(spec, len(pairs))
    return pairs


def load_full_labels(spec: LabelsSpec, artifact_dir: Path) -> list[str]:
    """Labels as the model's file writes them (BirdNET: ``Scientific_Common``), for outputs
    that carry both names and key on the whole label (BirdNET's eBird codes). Formats
    without common names give the same list as :func:`load_labels`."""
    return [f"{s}_{c}" if c else s for s, c in load_label_pairs(spec, artifact_dir)]
