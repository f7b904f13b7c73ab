"""What several command groups share, so each states it once: the exit codes and the error
line, the settings the root group loaded, ``--hop`` as an overlap, the audio paths, the
progress bar, and the request plan a command's options ask for (by the shared planner).

Heavy modules are imported inside the helpers that need them: importing this module (as
every command module does) must not load the engine, the decoder or the range model.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, Protocol

import click

from sevensense.errors import RequestError, SevensenseError

if TYPE_CHECKING:
    from sevensense.inference.engine import EmbeddingEngine, WindowResult
    from sevensense.inference.recordings import RunSummary
    from sevensense.inference.sessions import LoadedModel
    from sevensense.inference.species_range import SpeciesFilter
    from sevensense.planning.options import RequestOptions
    from sevensense.planning.plan import RequestPlan
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
    """``--hop`` (seconds) as the overlap fraction ``--overlap`` gives directly, by the
    planner's rule; a bad value is a usage error naming the flag."""
    from sevensense.planning.options import RequestOptions
    from sevensense.planning.plan import resolve_overlap

    if hop is not None and overlap is not None:
        raise click.UsageError("give --overlap or --hop, not both")
    try:
        return resolve_overlap(model.manifest, RequestOptions(overlap=overlap, hop_s=hop))
    except RequestError as exc:
        raise click.UsageError(f"--hop: {exc.message}") from None


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


class ProgressBar(Protocol):
    def update(self, n: float) -> object: ...

    def close(self) -> None: ...


class _NoBar:
    """What ``--quiet`` gets: tqdm (and the probing of every file for its total) cost a
    3-s file's run more than its windows did (issue 25)."""

    def update(self, n: float) -> None:
        pass

    def close(self) -> None:
        pass


def audio_bar(files: list[Path], quiet: bool, desc: str) -> ProgressBar:
    """A bar counting audio seconds, so files of any length advance it fairly."""
    if quiet:
        return _NoBar()
    from tqdm import tqdm

    bar: ProgressBar = tqdm(
        total=round(_total_seconds(files)),
        unit="s",
        unit_scale=True,
        disable=None,
        desc=desc,
        file=sys.stderr,
    )
    return bar


def window_progress(bar: ProgressBar) -> Callable[[WindowResult], None]:
    """Advances ``bar`` by the audio seconds each recording's windows have reached."""
    reached: dict[str, float] = {}

    def progress(result: WindowResult) -> None:
        before = reached.get(result.source, 0.0)
        if result.end_s > before:
            reached[result.source] = result.end_s
            bar.update(result.end_s - before)

    return progress


def check_species_flags(lat: float | None, lon: float | None, species_list: Path | None) -> None:
    """The combinations the planner refuses, refused first in the words of the flags."""
    if (lat is None) != (lon is None):
        raise click.UsageError("--lat and --lon go together")
    if lat is not None and species_list is not None:
        raise click.UsageError("give --lat/--lon or --species-list, not both")


def plan_request(
    engine: EmbeddingEngine, model: LoadedModel, options: RequestOptions
) -> RequestPlan:
    """The shared planner's plan for a run: every recording of it gets the same request."""
    from sevensense.planning.plan import Planner

    return Planner(engine.settings, engine.registry).plan(model.artifact, options)


def describe_species(species: SpeciesFilter | None) -> str:
    """The tail of a run's summary line naming the species filter, if any."""
    if species is None:
        return ""
    detail = ", ".join(
        f"{k} {v}" for k, v in species.summary().items() if k not in ("kind", "size")
    )
    return f"; species filter: {species.kind} ({detail or 'user list'}): {species.size} species"
