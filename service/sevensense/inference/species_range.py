"""Which species to expect at a place and time: BirdNET v2.4's range ("meta") model, and
user-supplied species lists, as filters over BirdNET's 6522 classes.

The range model scores every class for (latitude, longitude, week of a 48-week year); week
-1 asks for the whole year. BirdNET-Analyzer keeps the classes scoring at least 0.03 when it
analyses (its species-list command uses 0.05), so 0.03 is the default here too. The scores
come in the acoustic model's label order, so a mask built from them applies to its logits
directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from pydantic import BaseModel, ConfigDict, Field

from sevensense.artifacts.catalog import BIRDNET_RANGE_NAME
from sevensense.artifacts.labels import load_label_pairs
from sevensense.artifacts.manifest import OutputRole
from sevensense.artifacts.registry import Artifact, ModelRegistry
from sevensense.errors import ManifestError, SpeciesFilterError
from sevensense.inference.range_defaults import ALL_YEAR, DEFAULT_THRESHOLD

__all__ = [
    "ALL_YEAR",
    "DEFAULT_THRESHOLD",
    "RangeSpecies",
    "SpeciesFilter",
    "SpeciesRangeModel",
    "allowed_mask",
    "list_filter",
    "load_species_list",
    "location_filter",
    "validate_location",
    "validate_threshold",
]

WEEKS: Final = 48
_UNKNOWN_SHOWN: Final = 20


class RangeSpecies(NamedTuple):
    scientific: str
    common: str
    score: float


def validate_location(lat: float, lon: float, week: int) -> None:
    """Refuse what the model would silently extrapolate or misread.

    Out-of-range coordinates still produce scores (the encoding is periodic), and any week
    outside 1..48 is treated as "all year" by the model itself, so a typo such as week 52
    would quietly widen the filter instead of failing.
    """
    if not -90.0 <= lat <= 90.0:
        raise SpeciesFilterError(f"latitude {lat} is outside [-90, 90]", latitude=lat)
    if not -180.0 <= lon <= 180.0:
        raise SpeciesFilterError(f"longitude {lon} is outside [-180, 180]", longitude=lon)
    if isinstance(week, bool) or not isinstance(week, int | np.integer):
        raise SpeciesFilterError(f"week must be an integer, got {week!r}", week=repr(week))
    if week != ALL_YEAR and not 1 <= week <= WEEKS:
        raise SpeciesFilterError(
            f"week {week} is not in 1..{WEEKS} (or {ALL_YEAR} for all year)", week=int(week)
        )


def validate_threshold(threshold: float) -> None:
    # 0 would keep every class and 1 none, so either is a mistake rather than a filter.
    if not 0.0 < threshold < 1.0:
        raise SpeciesFilterError(
            f"threshold {threshold} is outside (0, 1)", threshold=float(threshold)
        )


class SpeciesRangeModel:
    """One verified range artifact on a small CPU session (a forward pass is a few MFLOPs)."""

    def __init__(self, artifact: Artifact, registry: ModelRegistry) -> None:
        manifest = artifact.manifest
        if manifest.kind != "range" or manifest.labels is None:
            raise ManifestError(f"{manifest.identity} is not a range model with labels")
        registry.verify(artifact)
        self.artifact = artifact
        self.labels: list[tuple[str, str]] = load_label_pairs(manifest.labels, artifact.directory)
        self.scientific_names = [scientific for scientific, _ in self.labels]
        self._input = manifest.input.name
        self._output = manifest.outputs[OutputRole.OCCURRENCE].name
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(
            str(artifact.model_path), sess_options=opts, providers=["CPUExecutionProvider"]
        )

    @classmethod
    def from_registry(
        cls, registry: ModelRegistry, ref: str = BIRDNET_RANGE_NAME
    ) -> SpeciesRangeModel:
        return cls(registry.resolve(ref, kind="range"), registry)

    def scores_many(self, points: Sequence[tuple[float, float, int]]) -> npt.NDArray[np.float32]:
        """Scores for several (lat, lon, week) points in one run: shape [len(points), classes]."""
        if not points:
            raise SpeciesFilterError("no location to score")
        for lat, lon, week in points:
            validate_location(lat, lon, week)
        x = np.asarray(points, dtype=np.float32).reshape(len(points), 3)
        out = self._session.run([self._output], {self._input: x})[0]
        return np.asarray(out, dtype=np.float32)

    def scores(self, lat: float, lon: float, week: int) -> npt.NDArray[np.float32]:
        """Occurrence scores in (0, 1) for every class, in the acoustic model's label order."""
        scores: npt.NDArray[np.float32] = self.scores_many([(lat, lon, week)])[0]
        return scores

    def species_list(
        self, lat: float, lon: float, week: int, threshold: float = DEFAULT_THRESHOLD
    ) -> list[RangeSpecies]:
        """Classes scoring at least ``threshold``, best first (label order among equals)."""
        validate_threshold(threshold)
        s = self.scores(lat, lon, week)
        kept = np.flatnonzero(s >= threshold)
        order = kept[np.argsort(-s[kept], kind="stable")]
        return [RangeSpecies(self.labels[i][0], self.labels[i][1], float(s[i])) for i in order]


def _entries(text: str) -> list[str]:
    names: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            names.append(line.split("_", 1)[0].strip())
    return names


def _check_known(names: Sequence[str], labels: Sequence[str], where: str, **details: str) -> None:
    """A name the model lacks is an error listing the unknown names: silently dropping a
    misspelt name would hide a species."""
    known = set(labels)
    unknown = [n for n in names if n not in known]
    if unknown:
        shown = ", ".join(unknown[:_UNKNOWN_SHOWN])
        more = f" and {len(unknown) - _UNKNOWN_SHOWN} more" if len(unknown) > _UNKNOWN_SHOWN else ""
        raise SpeciesFilterError(
            f"{where}{len(unknown)} name(s) not in the model's labels: {shown}{more}",
            unknown=unknown[:_UNKNOWN_SHOWN],
            unknown_count=len(unknown),
            **details,
        )


def load_species_list(path: Path, labels: Sequence[str]) -> list[str]:
    """The scientific names of a species list file, each checked against the model's labels.

    Lines are BirdNET's ``Scientific_Common`` or a bare scientific name; blank lines and
    ``#`` comments are ignored. Names are matched on the scientific part only, the key the
    label files of BirdNET and Perch share. A list naming nothing, or naming a class the
    model lacks, is an error: silently dropping a misspelt name would hide a species.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpeciesFilterError(f"cannot read species list {path}: {exc}", path=str(path)) from exc
    names = list(dict.fromkeys(_entries(text)))
    if not names:
        raise SpeciesFilterError(f"species list {path} names no species", path=str(path))
    _check_known(names, labels, f"species list {path}: ", path=str(path))
    return names


def allowed_mask(labels: Sequence[str], allowed_names: Iterable[str]) -> npt.NDArray[np.bool_]:
    """True where a class is allowed, aligned with ``labels`` (and so with the logits)."""
    allowed = set(allowed_names)
    return np.fromiter((label in allowed for label in labels), dtype=np.bool_, count=len(labels))


class SpeciesFilter(BaseModel):
    """The species a request may report, and why: a place and week through the range model,
    or a list the user gave. Answers state it (kind, size, parameters) so that a short
    species list is never mistaken for a quiet recording."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["location", "list"]
    species: tuple[str, ...] = Field(description="allowed scientific names")
    lat: float | None = None
    lon: float | None = None
    week: int | None = None
    threshold: float | None = None

    @property
    def size(self) -> int:
        return len(self.species)

    def summary(self) -> dict[str, object]:
        body = self.model_dump(exclude={"species"}, exclude_none=True)
        body["size"] = self.size
        return body


def location_filter(
    model: SpeciesRangeModel,
    lat: float,
    lon: float,
    week: int = ALL_YEAR,
    threshold: float = DEFAULT_THRESHOLD,
) -> SpeciesFilter:
    validate_location(lat, lon, week)
    validate_threshold(threshold)
    kept = model.species_list(lat, lon, week, threshold)
    return SpeciesFilter(
        kind="location",
        species=tuple(s.scientific for s in kept),
        lat=lat,
        lon=lon,
        week=week,
        threshold=threshold,
    )


def list_filter(names: Iterable[str], labels: Sequence[str]) -> SpeciesFilter:
    """A user's species list (already parsed), checked against the model's labels."""
    wanted = list(dict.fromkeys(n.split("_", 1)[0].strip() for n in names if n.strip()))
    if not wanted:
        raise SpeciesFilterError("the species list is empty")
    _check_known(wanted, labels, "")
    return SpeciesFilter(kind="list", species=tuple(wanted))
