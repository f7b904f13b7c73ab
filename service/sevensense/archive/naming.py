"""Where the batch worker writes an object's result, which is also its done record.

Output key (deterministic, so a redelivered event finds its own earlier result)::

    <output_prefix><key relative to input_prefix>.<model>-<version>-<variant>.<etag[:16]>.parquet

e.g. ``incoming/site a/2024-05-01.flac`` with ETag ``"9b2c..."`` under BirdNET 2.4.0 gives
``embeddings/site a/2024-05-01.flac.birdnet-v2.4-2.4.0-base.9b2c0d1e2f3a4b5c.parquet``.
A key outside ``input_prefix`` keeps its full path. The ETag changes when the object is
overwritten, and the model version when the model does, so either yields a new output and
never overwrites an old one. The worker checks the key before it works and the archive
submitter before it enqueues: one naming, here, for both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from sevensense.artifacts.catalog import default_model
from sevensense.artifacts.manifest import ModelIdentity
from sevensense.artifacts.registry import ModelRegistry
from sevensense.inference.recordings import AUDIO_SUFFIXES
from sevensense.planning.options import RequestOptions
from sevensense.planning.plan import Planner
from sevensense.settings import Settings, WorkerSettings


def clean_etag(etag: str) -> str:
    return re.sub(r"[^0-9A-Za-z-]", "", etag)


def output_key(
    input_key: str,
    input_prefix: str,
    output_prefix: str,
    model: ModelIdentity,
    etag: str,
    space: str = "full",
) -> str:
    """``space`` (a transform's space key) is part of the name unless "full", so reduced
    and full outputs of one object never take each other's place."""
    relative = input_key[len(input_prefix) :] if input_key.startswith(input_prefix) else input_key
    tag = clean_etag(etag)[:16]
    model_part = f"{model.name}-{model.version}-{model.variant}"
    if space != "full":
        model_part += f".{space}"
    return f"{output_prefix}{relative}.{model_part}.{tag}.parquet"


def output_stem(input_key: str, input_prefix: str, output_prefix: str) -> str:
    """What every output key of ``input_key`` starts with (before ``.<model>``)."""
    relative = input_key[len(input_prefix) :] if input_key.startswith(input_prefix) else input_key
    return f"{output_prefix}{relative}"


def is_audio_key(key: str) -> bool:
    return PurePosixPath(key).suffix.lower() in AUDIO_SUFFIXES


def request_options(settings: WorkerSettings) -> RequestOptions:
    """A worker's settings in the planner's words: every recording gets the same request."""
    species = settings.species
    return RequestOptions(
        lat=species.lat,
        lon=species.lon,
        week=species.week,
        sf_thresh=species.sf_thresh,
        species_file=species.species_list,
        reduce=settings.reduce,
        project=settings.project,
        curvature=settings.curvature,
        max_norm=settings.max_norm,
        detect=settings.detections_format is not None,
        min_conf=settings.detections_min_conf,
        sensitivity=settings.detections_sensitivity,
        merge_consecutive=settings.detections_merge_consecutive,
        resampler=settings.detections_resampler if settings.detections_format else None,
    )


@dataclass(frozen=True)
class OutputNaming:
    """The worker's output keys for its configured model and transform."""

    model: ModelIdentity
    space: str
    input_prefix: str
    output_prefix: str

    @classmethod
    def of(cls, settings: Settings, registry: ModelRegistry | None = None) -> OutputNaming:
        """What a worker with these settings would name its outputs: the same model
        resolution and the same transform plan, without loading the model."""
        registry = registry or ModelRegistry(settings.models_dir)
        worker = settings.worker
        artifacts = registry.artifacts()
        ref = worker.model or default_model(settings, artifacts)
        artifact = registry.resolve(ref, artifacts=artifacts)
        transform = Planner(settings, registry).transform(artifact, request_options(worker))
        return cls(
            artifact.manifest.identity,
            transform.space_key,
            worker.input_prefix,
            worker.output_prefix,
        )

    def key(self, input_key: str, etag: str) -> str:
        return output_key(
            input_key, self.input_prefix, self.output_prefix, self.model, etag, self.space
        )

    def stem(self, input_key: str) -> str:
        return output_stem(input_key, self.input_prefix, self.output_prefix)
