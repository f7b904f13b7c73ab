"""A request's options in the words every face shares, and the limits a face may set.

Kept apart from the planner so that a face that only builds options (a form model, a
settings section) does not depend on how plans are made.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sevensense.inference.range_defaults import ALL_YEAR, DEFAULT_THRESHOLD

# A hop under a tenth of the window multiplies the work per second of audio without
# adding information.
MAX_OVERLAP = 0.9


@dataclass(frozen=True)
class RequestOptions:
    """What a caller asked for, in the words every face shares; None means the default."""

    model: str | None = None
    overlap: float | None = None
    hop_s: float | None = None
    top_k: int | None = None
    include_logits: bool = False
    include_spectrogram: bool = False
    padding: str | None = None
    energy_threshold: float | None = None
    lat: float | None = None
    lon: float | None = None
    week: int = ALL_YEAR
    sf_thresh: float = DEFAULT_THRESHOLD
    species: tuple[str, ...] | None = None  # names, as an HTTP field or a stream sends them
    species_file: Path | None = None  # a list file, as the CLI and the worker name it
    reduce: str | None = None
    project: str | None = None
    curvature: float = 1.0
    max_norm: float = 0.999
    detect: bool = False  # detections: every class's score is needed
    min_conf: float = 0.25
    sensitivity: float = 1.0  # BirdNET's sigmoid sensitivity, 0.5-1.5
    merge_consecutive: int = 1  # BirdNET-Analyzer's merging of a species' consecutive windows
    resampler: str | None = None  # None: BirdNET-Analyzer's for detections, else the profile's
    classifier: str | None = None  # a custom classifier, name[:version], run on every window
    tenant: str | None = None  # whose classifiers the request may name (None: any)


@dataclass(frozen=True)
class PlanLimits:
    """What a face allows: a service bounds the work one request may ask for, an offline
    run on the user's own machine need not."""

    max_overlap: float | None = None
    max_duration_s: float | None = None


SERVICE_LIMITS = PlanLimits(max_overlap=MAX_OVERLAP)
OFFLINE = PlanLimits()
