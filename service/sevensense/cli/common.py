"""What several command groups share, so each states it once: the exit codes and the error
line, the settings the root group loaded, ``--hop`` as an overlap, the audio paths, the
progress bar, the species filter and the vector transform a command's options ask for.

Heavy modules are imported inside the helpers that need them: importing this module (as
every command module does) must not load the engine, the decoder or the range model.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from sevensense.errors import SevensenseError, SpeciesFilterError

if TYPE_CHECKING:
    from tqdm import tqdm

    from sevensense.artifacts.registry import ModelRegistry
    from sevensense.embeddings.transform import VectorTransform
    from sevensense.inference.engine import WindowResult
    from sevensense.inference.recordings import RunSummary
    from sevensense.inference.sessions import LoadedModel
    from sevensense.inference.species_range import SpeciesFilter
    from sevensense.settings import Settings

EXIT_OK, EXIT_PARTIAL, EXIT_FAILED = 0, 1, 2


def fail(exc: SevensenseError) -> NoReturn:
    click.echo(f"error [{exc.code}]: {exc.message}", err=True)
    sys.exit(EXIT_FAILED)


def settings_of(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj["settings"]
    return settings


def parse_time(value: str) -> datetime:
    """An ISO 8601 time; a naive one is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def hop_overlap(model: LoadedModel, overlap: float | None, hop: float | None) -> float | None:
    """``--hop`` (seconds) as the overlap fraction ``--overlap`` gives directly."""
    if hop is None:
        return overlap
    if overlap is not None:
        raise click.UsageError("give --overlap or --hop, not both")
    window_s = model.manifest.window_seconds
    if not 0 < hop <= window_s:
        raise click.UsageError(f"--hop must be in (0, {window_s}] s for {model.identity}")
    return 1.0 - hop / window_s


def audio_files(paths: tuple[Path, ...]) -> list[Path]:
    """The recordings under ``paths``; none at all is a failed run, not an empty one."""
    from sevensense.inference.recordings import expand_paths

    files = expand_paths(paths)
    if not files:
        click.echo("error: no audio files found", err=True)
        sys.exit(EXIT_FAILED)
    return files


def report_failures(summary: RunSummary) -> None:
    for rec in summary.failed:
        err = rec.error or {}
        click.echo(
            f"{rec.status}: {rec.source}: [{err.get('code')}] {err.get('message')}", err=True
        )


def _total_seconds(files: list[Path]) -> float:
    """Header durations for the progress bar; unreadable files count as zero here."""
    from sevensense.audio.decode import probe

    total = 0.0
    for path in files:
        try:
            total += probe(path).duration_s
        except SevensenseError:
            continue
    return total


def audio_bar(files: list[Path], quiet: bool, desc: str) -> tqdm:
    """A bar counting audio seconds, so files of any length advance it fairly."""
    from tqdm import tqdm

    return tqdm(
        total=round(_total_seconds(files)),
        unit="s",
        unit_scale=True,
        disable=quiet or None,
        desc=desc,
        file=sys.stderr,
    )


def window_progress(bar: tqdm) -> Callable[[WindowResult], None]:
    """Advances ``bar`` by the audio seconds each recording's windows have reached."""
    reached: dict[str, float] = {}

    def progress(result: WindowResult) -> None:
        before = reached.get(result.source, 0.0)
        if result.end_s > before:
            reached[result.source] = result.end_s
            bar.update(result.end_s - before)

    return progress


def vector_transform(
    settings: Settings,
    model: LoadedModel,
    reduce_ref: str | None,
    project: str | None,
    curvature: float,
    max_norm: float,
) -> VectorTransform:
    """The transform :func:`~sevensense.cli.options.transform_options` asked for."""
    from sevensense.embeddings.transform import artifact_sha256, load_transform

    m = model.manifest
    return load_transform(
        settings,
        m.name,
        m.version,
        artifact_sha256(model.artifact),
        reduce_ref,
        project,
        curvature=curvature,
        max_norm=max_norm,
    )


def species_filter(
    registry: ModelRegistry,
    labels: list[str] | None,
    lat: float | None,
    lon: float | None,
    week: int,
    sf_thresh: float,
    species_list: Path | None,
) -> SpeciesFilter | None:
    """Raises SpeciesFilterError on bad values; UsageError on a bad combination."""
    from sevensense.inference.species_range import (
        SpeciesRangeModel,
        list_filter,
        load_species_list,
        location_filter,
    )

    if (lat is None) != (lon is None):
        raise click.UsageError("--lat and --lon go together")
    if lat is not None and species_list is not None:
        raise click.UsageError("give --lat/--lon or --species-list, not both")
    if lat is not None and lon is not None:
        return location_filter(SpeciesRangeModel.from_registry(registry), lat, lon, week, sf_thresh)
    if species_list is not None:
        if labels is None:
            raise SpeciesFilterError("this model has no class labels to filter")
        return list_filter(load_species_list(species_list, labels), labels)
    return None


def describe_species(species: SpeciesFilter | None) -> str:
    """The tail of a run's summary line naming the species filter, if any."""
    if species is None:
        return ""
    detail = ", ".join(
        f"{k} {v}" for k, v in species.summary().items() if k not in ("kind", "size")
    )
    return f"; species filter: {species.kind} ({detail or 'user list'}): {species.size} species"
