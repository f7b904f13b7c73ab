"""Which class of one model is which class of another: matched by scientific name.

Both label lists are keyed by scientific name (Perch's iNat/eBird taxonomy, BirdNET's
``Scientific_Common`` file), so the name itself is the join key, compared with case and
runs of whitespace folded. Sound-event classes never match, even where the two lists
share the word: Perch's FSD50K "Dog" is every dog sound in a web archive, BirdNET's "Dog"
a class trained to keep dogs out of bird detections; calling them one species would count
agreement that says nothing about birds.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sevensense.artifacts.labels import load_labels
from sevensense.artifacts.registry import Artifact
from sevensense.errors import ManifestError

# A binomial or trinomial after folding: genus, epithet(s); FSD50K/ASA classes are single
# words or use underscores and brackets.
_TAXON = re.compile(r"^[a-z][a-z-]* [a-z][a-z.'-]*( [a-z][a-z.'-]*)?$")
# BirdNET's non-bird, non-species classes that happen to be two words.
_EVENT_PHRASES = frozenset({"human vocal", "human non-vocal", "human whistle", "power tools"})


def fold(name: str) -> str:
    return " ".join(name.split()).casefold()


def is_species(name: str) -> bool:
    folded = fold(name)
    return bool(_TAXON.match(folded)) and folded not in _EVENT_PHRASES


@dataclass(frozen=True)
class SpeciesMap:
    """``to_verifier[i]`` is the verifier class of primary class ``i`` (−1: none);
    ``to_primary`` the reverse. Shared sound-event names are listed, never mapped."""

    primary_labels: tuple[str, ...]
    verifier_labels: tuple[str, ...]
    to_verifier: np.ndarray
    to_primary: np.ndarray
    shared_sound_events: tuple[str, ...]

    @property
    def mapped(self) -> int:
        return int((self.to_primary >= 0).sum())

    @property
    def primary_mapped(self) -> np.ndarray:
        """Indices of primary classes that have a verifier class."""
        return np.flatnonzero(self.to_verifier >= 0)

    @property
    def verifier_mapped(self) -> np.ndarray:
        return np.flatnonzero(self.to_primary >= 0)

    def unmatched_verifier(self) -> list[str]:
        return [self.verifier_labels[i] for i in np.flatnonzero(self.to_primary < 0)]

    def summary(self) -> dict[str, object]:
        return {
            "mapped": self.mapped,
            "verifier_classes": len(self.verifier_labels),
            "primary_classes": len(self.primary_labels),
            "shared_sound_events": list(self.shared_sound_events),
        }


def build_species_map(primary: Sequence[str], verifier: Sequence[str]) -> SpeciesMap:
    """Pure: two label lists in, the map out. A name listed twice maps its first class."""
    index: dict[str, int] = {}
    for i, name in enumerate(verifier):
        index.setdefault(fold(name), i)
    to_verifier = np.full(len(primary), -1, dtype=np.int64)
    to_primary = np.full(len(verifier), -1, dtype=np.int64)
    events: list[str] = []
    for i, name in enumerate(primary):
        j = index.get(fold(name))
        if j is None:
            continue
        if not is_species(name) or not is_species(verifier[j]):
            events.append(verifier[j])
            continue
        if to_primary[j] < 0:
            to_primary[j] = i
            to_verifier[i] = j
    return SpeciesMap(
        tuple(primary), tuple(verifier), to_verifier, to_primary, tuple(sorted(set(events)))
    )


_cache: dict[tuple[str, str], SpeciesMap] = {}
_lock = threading.Lock()


def artifact_labels(artifact: Artifact) -> list[str]:
    manifest = artifact.manifest
    if manifest.labels is None:
        raise ManifestError(f"{manifest.identity} has no class labels: nothing to verify")
    return load_labels(manifest.labels, artifact.directory)


def species_map_for(primary: Artifact, verifier: Artifact) -> SpeciesMap:
    """Cached per pair of label files (by artifact digest and label file)."""
    key = (
        f"{primary.manifest.sha256}:{primary.manifest.labels}",
        f"{verifier.manifest.sha256}:{verifier.manifest.labels}",
    )
    with _lock:
        found = _cache.get(key)
    if found is not None:
        return found
    built = build_species_map(artifact_labels(primary), artifact_labels(verifier))
    with _lock:
        _cache[key] = built
    return built
