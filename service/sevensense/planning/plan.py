"""From a request's options to one validated plan, the same for every face.

The HTTP gateway, the live stream, the S3 worker, the deferred-job handler and the command
line each used to decide on their own what "a species filter by location, else by list",
"a reducer for this model" or "detections need a classifier" meant, and their copies had
drifted (the worker built a list filter for a model without labels). Each face now turns
its own input (form fields, an ``open`` message, settings, flags) into
:class:`RequestOptions` and asks a :class:`Planner`; what a face may still decide is its
limits (:class:`PlanLimits`), never the rules.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from sevensense.artifacts.labels import load_full_labels, load_labels
from sevensense.artifacts.manifest import ModelManifest
from sevensense.artifacts.registry import Artifact, ModelRegistry
from sevensense.audio.pipeline import PreprocessConfig
from sevensense.audio.quality_levels import BIRDNET_ANALYZER, QUALITIES
from sevensense.audio.windowing import Padding
from sevensense.embeddings.transform import VectorTransform, artifact_sha256, load_transform
from sevensense.errors import ModelError, RequestError, SpeciesFilterError
from sevensense.inference.engine import EmbedOptions, preprocess_config, species_mask
from sevensense.inference.species_range import (
    SpeciesFilter,
    SpeciesRangeModel,
    list_filter,
    load_species_list,
    location_filter,
)
from sevensense.outputs.detections import (
    SIG_MINLEN,
    AnalysisParams,
    DetectionCollector,
    load_species_codes,
)
from sevensense.outputs.formats import MAX_SENSITIVITY, MIN_SENSITIVITY
from sevensense.planning.options import OFFLINE, PlanLimits, RequestOptions
from sevensense.settings import Settings

if TYPE_CHECKING:
    from sevensense.agile.store import Classifier


@dataclass(frozen=True)
class DetectionPlan:
    """Everything detections need, read once per artifact: every class's
    ``Scientific_Common`` label, the eBird codes, and the species filter's mask."""

    labels: list[str]
    codes: dict[str, str]
    allowed: np.ndarray | None
    min_conf: float
    top_k: int | None
    sensitivity: float = 1.0
    merge_consecutive: int = 1

    def collector(self) -> DetectionCollector:
        return DetectionCollector(
            self.labels,
            min_conf=self.min_conf,
            top_k=self.top_k,
            allowed=self.allowed,
            sensitivity=self.sensitivity,
            merge_consecutive=self.merge_consecutive,
        )


@dataclass(frozen=True)
class RequestPlan:
    """What a request resolved to before its audio is read."""

    artifact: Artifact
    transform: VectorTransform
    species: SpeciesFilter | None
    options: EmbedOptions
    config: PreprocessConfig
    k: int
    window_s: float
    detections: DetectionPlan | None = None
    classifier: Classifier | None = None

    @property
    def manifest(self) -> ModelManifest:
        return self.artifact.manifest

    @property
    def hop_s(self) -> float:
        return self.window_s * (1.0 - self.config.overlap)

    @property
    def out_dim(self) -> int:
        return self.transform.out_dim(self.manifest.embedding_dim)

    @property
    def resampler(self) -> str:
        return self.config.resample_quality

    def analysis(self) -> AnalysisParams:
        """BirdNET-Analyzer's run parameters as its side files state them."""
        located = self.species is not None and self.species.kind == "location"
        species = self.species
        det = self.detections
        return AnalysisParams(
            lat=species.lat if located and species and species.lat is not None else -1,
            lon=species.lon if located and species and species.lon is not None else -1,
            week=species.week if located and species and species.week is not None else -1,
            overlap=round(self.window_s - self.hop_s, 4),
            sensitivity=det.sensitivity if det else 1.0,
            merge_consecutive=det.merge_consecutive if det else 1,
            sample_rate=self.manifest.sample_rate,
            window_s=self.window_s,
        )


def resolve_overlap(
    manifest: ModelManifest, options: RequestOptions, limits: PlanLimits = OFFLINE
) -> float | None:
    """``hop_s`` wins over ``overlap``; a hop longer than the window, or denser than the
    face allows, is refused. None: the profile's or the model's default."""
    window_s = manifest.window_samples / manifest.sample_rate
    overlap = options.overlap
    if options.hop_s is not None:
        if not 0 < options.hop_s <= window_s:
            raise RequestError(
                f"hop_s {options.hop_s} must be in (0, {window_s:g}] s, the window of "
                f"{manifest.name}"
            )
        overlap = 1.0 - options.hop_s / window_s
    if overlap is not None and limits.max_overlap is not None and overlap > limits.max_overlap:
        raise RequestError(
            f"a hop under {1 - limits.max_overlap:.0%} of the {window_s:g}-s window "
            f"(overlap over {limits.max_overlap:.0%}) is refused: it multiplies the work per "
            "second of audio without adding information"
        )
    return overlap


class Planner:
    """Plans requests for one process: labels, species codes and location filters are read
    or computed once and shared by every request (the range model runs once per place,
    week and threshold)."""

    def __init__(self, settings: Settings, registry: ModelRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or ModelRegistry(settings.models_dir)
        self._labels: dict[tuple[str, str, str], list[str] | None] = {}
        self._full_labels: dict[tuple[str, str, str], list[str] | None] = {}
        self._codes: dict[tuple[str, str, str], dict[str, str]] = {}
        self._lock = threading.Lock()
        self._range_model: SpeciesRangeModel | None = None

    # --- what an artifact knows -------------------------------------------------------------

    def labels(self, artifact: Artifact) -> list[str] | None:
        key = artifact.key
        if key not in self._labels:
            spec = artifact.manifest.labels
            self._labels[key] = load_labels(spec, artifact.directory) if spec else None
        return self._labels[key]

    def full_labels(self, artifact: Artifact) -> list[str] | None:
        """``Scientific_Common`` labels, for detections."""
        key = artifact.key
        if key not in self._full_labels:
            spec = artifact.manifest.labels
            self._full_labels[key] = load_full_labels(spec, artifact.directory) if spec else None
        return self._full_labels[key]

    def species_codes(self, artifact: Artifact) -> dict[str, str]:
        key = artifact.key
        if key not in self._codes:
            self._codes[key] = load_species_codes(artifact.directory)
        return self._codes[key]

    # --- the rules --------------------------------------------------------------------------

    def species_filter(self, artifact: Artifact, options: RequestOptions) -> SpeciesFilter | None:
        """By location, else by list (names or a file); never both, and a list needs the
        model's class labels to be checked against."""
        if (options.lat is None) != (options.lon is None):
            raise SpeciesFilterError("lat and lon go together")
        listed = options.species is not None or options.species_file is not None
        if options.lat is not None and listed:
            raise SpeciesFilterError("give a location (lat/lon) or a species list, not both")
        if options.species is not None and options.species_file is not None:
            raise SpeciesFilterError("give species names or a species list file, not both")
        if options.lat is not None and options.lon is not None:
            return self._location_filter(options.lat, options.lon, options.week, options.sf_thresh)
        if not listed:
            return None
        labels = self.labels(artifact)
        if labels is None:
            raise SpeciesFilterError("this model has no class labels to filter")
        if options.species_file is not None:
            return list_filter(load_species_list(options.species_file, labels), labels)
        return list_filter(options.species or (), labels)

    @functools.lru_cache(maxsize=256)  # noqa: B019 -- one planner per process, lives as long
    def _location_filter(
        self, lat: float, lon: float, week: int, threshold: float
    ) -> SpeciesFilter:
        with self._lock:
            if self._range_model is None:
                self._range_model = SpeciesRangeModel.from_registry(self.registry)
        return location_filter(self._range_model, lat, lon, week, threshold)

    def transform(self, artifact: Artifact, options: RequestOptions) -> VectorTransform:
        """The reducer and projection, verified for this exact version (a model without a
        pinned digest is hashed once, so call it off the event loop)."""
        manifest = artifact.manifest
        transform = load_transform(
            self.settings,
            manifest.name,
            manifest.version,
            artifact_sha256(artifact) if options.reduce else None,
            options.reduce,
            options.project,
            curvature=options.curvature,
            max_norm=options.max_norm,
        )
        transform.out_dim(manifest.embedding_dim)
        return transform

    def detections(
        self, artifact: Artifact, species: Sequence[str] | None, options: RequestOptions
    ) -> DetectionPlan:
        """``species``: the names a species filter allows (None: every class)."""
        full = self.full_labels(artifact)
        if full is None or not artifact.manifest.n_classes:
            raise ModelError(f"{artifact.manifest.identity} has no classifier: nothing to detect")
        if not MIN_SENSITIVITY <= options.sensitivity <= MAX_SENSITIVITY:
            raise RequestError(
                f"sensitivity {options.sensitivity} must be in "
                f"[{MIN_SENSITIVITY}, {MAX_SENSITIVITY}] (BirdNET's range)"
            )
        if options.merge_consecutive < 0:
            raise RequestError("merge_consecutive must be 0 or more (0 and 1: no merging)")
        return DetectionPlan(
            labels=full,
            codes=self.species_codes(artifact),
            allowed=species_mask(self.labels(artifact), species),
            min_conf=options.min_conf,
            top_k=options.top_k or None,
            sensitivity=options.sensitivity,
            merge_consecutive=options.merge_consecutive,
        )

    def classifier(
        self, artifact: Artifact, transform: VectorTransform, options: RequestOptions
    ) -> Classifier | None:
        """The named classifier, verified, and only for this request's space (409 naming
        both spaces otherwise: its weights mean nothing for other axes)."""
        if not options.classifier:
            return None
        from sevensense.agile.store import ClassifierStore
        from sevensense.index.records import SpaceKey

        found = ClassifierStore(self.settings.models_dir).resolve(
            options.classifier, options.tenant
        )
        manifest = artifact.manifest
        found.check_space(
            SpaceKey(
                model_name=manifest.name,
                model_version=manifest.version,
                transform=transform.space_key,
            )
        )
        return found

    @staticmethod
    def resampler(options: RequestOptions) -> str | None:
        """Detections resample as BirdNET-Analyzer does unless the caller names another
        resampler; embeddings keep the profile's (soxr)."""
        chosen = options.resampler or (BIRDNET_ANALYZER if options.detect else None)
        if chosen is not None and chosen not in QUALITIES:
            raise RequestError(f"resampler {chosen!r} is not one of {', '.join(QUALITIES)}")
        return chosen

    def plan(
        self, artifact: Artifact, options: RequestOptions, limits: PlanLimits = OFFLINE
    ) -> RequestPlan:
        """Everything about a request that does not need its audio; may block (range model,
        hashing, reducer files), so services call it in a worker thread."""
        manifest = artifact.manifest
        transform = self.transform(artifact, options)
        species = self.species_filter(artifact, options)
        overlap = resolve_overlap(manifest, options, limits)
        allowed = species.species if species else None
        detections = self.detections(artifact, allowed, options) if options.detect else None
        resampler = self.resampler(options)
        embed = EmbedOptions(
            overlap=overlap,
            padding=options.padding or (Padding.ZERO_PAD if options.detect else None),  # type: ignore[arg-type]
            resample_quality=resampler,
            min_tail_s=SIG_MINLEN if options.detect else None,
            energy_threshold=options.energy_threshold,
            top_k=options.top_k,
            include_logits=options.include_logits or options.detect,
            include_spectrogram=options.include_spectrogram,
            max_duration_s=limits.max_duration_s,
            species=allowed,
        )
        config = preprocess_config(self.settings, manifest, embed)
        k = self.settings.top_k if options.top_k is None else options.top_k
        window_s = manifest.window_samples / manifest.sample_rate
        return RequestPlan(
            artifact,
            transform,
            species,
            embed,
            config,
            k,
            window_s,
            detections,
            self.classifier(artifact, transform, options),
        )

    def with_options(self, plan: RequestPlan, **changes: Any) -> RequestPlan:
        """The same plan with other engine options (e.g. a face that needs logits)."""
        options = replace(plan.options, **changes)
        config = preprocess_config(self.settings, plan.manifest, options)
        return replace(plan, options=options, config=config)
