"""``sevensense detect`` and ``sevensense species``: species detections in the formats of
BirdNET-Analyzer, and the species list its range model gives for a place and week, so
either can stand in where BirdNET-Analyzer's command line was used.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from sevensense.audio.quality_levels import BIRDNET_ANALYZER, QUALITIES, describe_resampler
from sevensense.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PARTIAL,
    audio_bar,
    audio_files,
    check_species_flags,
    describe_species,
    fail,
    hop_overlap,
    plan_request,
    report_failures,
    settings_of,
    window_progress,
)
from sevensense.cli.options import species_options
from sevensense.errors import ModelError, SevensenseError
from sevensense.inference.range_defaults import ALL_YEAR, DEFAULT_THRESHOLD
from sevensense.outputs.formats import FORMATS, MAX_SENSITIVITY, MIN_SENSITIVITY

if TYPE_CHECKING:
    from sevensense.outputs.formats import DetectionFormat


@click.command("detect")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--model", "model_ref", default=None, help="name[:version][:variant]; default from the profile"
)
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(path_type=Path),
    help="a directory (one file per recording, BirdNET's names) or one file (all recordings)",
)
@click.option(
    "--format",
    "fmts",
    type=click.Choice(list(FORMATS)),
    multiple=True,
    default=("raven",),
    show_default=True,
    help="repeat for several formats from one analysis (BirdNET-Analyzer's --rtype)",
)
@click.option(
    "--min-conf",
    type=click.FloatRange(0.0, 1.0),
    default=0.25,
    show_default=True,
    help="lowest score reported (BirdNET-Analyzer 2.4.0's default)",
)
@click.option("--top-k", type=click.IntRange(1), default=None, help="the best k per window instead")
@click.option("--combined", is_flag=True, help="also one table for all recordings (into --out)")
@click.option("--overlap", type=float, default=None, help="window overlap fraction, e.g. 0.5")
@click.option("--hop", type=float, default=None, help="hop in seconds (alternative to --overlap)")
@click.option(
    "--sensitivity",
    type=click.FloatRange(MIN_SENSITIVITY, MAX_SENSITIVITY),
    default=1.0,
    show_default=True,
    help="BirdNET's sigmoid sensitivity: higher finds more (shifts logits by (s - 1) x 10)",
)
@click.option(
    "--merge-consecutive",
    type=click.IntRange(0),
    default=1,
    show_default=True,
    help="merge up to N consecutive detections of a species into one (0 or 1: off)",
)
@click.option(
    "--resampler",
    type=click.Choice(list(QUALITIES)),
    default=BIRDNET_ANALYZER,
    show_default=True,
    help="kaiser_fast: BirdNET-Analyzer's (resampy); high: soxr HQ, as embeddings use",
)
@click.option("--quiet", is_flag=True, help="no progress bar")
@species_options
@click.pass_context
def detect(
    ctx: click.Context,
    paths: tuple[Path, ...],
    model_ref: str | None,
    out_path: Path,
    fmts: tuple[DetectionFormat, ...],
    min_conf: float,
    top_k: int | None,
    combined: bool,
    overlap: float | None,
    hop: float | None,
    sensitivity: float,
    merge_consecutive: int,
    resampler: str,
    quiet: bool,
    lat: float | None,
    lon: float | None,
    week: int,
    sf_thresh: float,
    species_list: Path | None,
) -> None:
    """Species detections per window in BirdNET-Analyzer's formats (Raven, Audacity, CSV,
    Kaleidoscope) or Parquet."""
    from sevensense.inference.engine import EmbeddingEngine
    from sevensense.inference.recordings import embed_recordings
    from sevensense.outputs.detections import write_detections
    from sevensense.planning.options import RequestOptions

    settings = settings_of(ctx)
    try:
        engine = EmbeddingEngine(settings)
        model = engine.model(model_ref)
        check_species_flags(lat, lon, species_list)
        plan = plan_request(
            engine,
            model,
            RequestOptions(
                overlap=hop_overlap(model, overlap, hop),
                top_k=top_k,
                lat=lat,
                lon=lon,
                week=week,
                sf_thresh=sf_thresh,
                species_file=species_list,
                detect=True,
                min_conf=min_conf,
                sensitivity=sensitivity,
                merge_consecutive=merge_consecutive,
                resampler=resampler,
            ),
        )
        detections = plan.detections
        if detections is None:  # a detect=True plan always has them
            raise ModelError(f"{model.identity}: no detections planned")
    except SevensenseError as exc:
        fail(exc)
    files = audio_files(paths)
    single_file = out_path.suffix != "" and not out_path.is_dir()
    fmts = tuple(dict.fromkeys(fmts))
    if single_file and len(fmts) > 1:
        raise click.UsageError("several formats need a directory as --out")
    if single_file and "audacity" in fmts and len(files) > 1:
        raise click.UsageError("Audacity labels name no file: give a directory as --out")
    collector = detections.collector()
    bar = audio_bar(files, quiet, "audio analysed")
    summary = embed_recordings(
        engine,
        files,
        collector.add,
        model=model,
        options=plan.options,
        on_window=window_progress(bar),
    )
    bar.close()
    recordings = [
        collector.recording(r.source, r.duration_s, r.sample_rate or model.manifest.sample_rate)
        for r in summary.recordings
        if r.status != "failed"
    ]
    root = paths[0] if len(paths) == 1 and paths[0].is_dir() else None
    written: list[Path] = []
    for fmt in fmts:
        written.extend(
            p
            for p in write_detections(
                recordings,
                fmt,
                out_path,
                single_file=single_file,
                combined=combined,
                root=root,
                codes=detections.codes,
                params=plan.analysis(),
            )
            if p not in written
        )
    report_failures(summary)
    found = sum(len(r.detections) for r in recordings)
    click.echo(
        f"{found} detections in {summary.windows} windows from {len(recordings)}/{len(files)} "
        f"files ({summary.audio_s:.1f} s audio) in {summary.wall_s:.2f} s "
        f"[{summary.model} on {summary.provider}, "
        f"resampled by {describe_resampler(plan.resampler)}]"
        f" -> {', '.join(str(p) for p in written[:3])}"
        + (f" (+{len(written) - 3} more)" if len(written) > 3 else "")
        + describe_species(plan.species)
    )
    if not recordings:
        sys.exit(EXIT_FAILED)
    sys.exit(EXIT_PARTIAL if summary.failed else EXIT_OK)


@click.command("species")
@click.option("--lat", type=float, required=True, help="latitude")
@click.option("--lon", type=float, required=True, help="longitude")
@click.option(
    "--week",
    type=int,
    default=ALL_YEAR,
    show_default=True,
    help="1-48 as BirdNET counts; -1 = all year",
)
@click.option("--sf-thresh", type=float, default=DEFAULT_THRESHOLD, show_default=True)
@click.option(
    "--out", "out_path", type=click.Path(path_type=Path), default=None, help="write the list here"
)
@click.pass_context
def species(
    ctx: click.Context, lat: float, lon: float, week: int, sf_thresh: float, out_path: Path | None
) -> None:
    """The species BirdNET's range model expects at a place and week (a species list file,
    ``Scientific_Common`` per line, best first)."""
    from sevensense.artifacts.registry import ModelRegistry
    from sevensense.inference.species_range import (
        SpeciesRangeModel,
        validate_location,
        validate_threshold,
    )
    from sevensense.storage.atomic import atomic_write

    settings = settings_of(ctx)
    try:
        validate_location(lat, lon, week)
        validate_threshold(sf_thresh)
        kept = SpeciesRangeModel.from_registry(ModelRegistry(settings.models_dir)).species_list(
            lat, lon, week, sf_thresh
        )
    except SevensenseError as exc:
        fail(exc)
    text = "".join(f"{s.scientific}_{s.common}\n" for s in kept)
    if out_path is None:
        click.echo(text, nl=False)
    else:
        atomic_write(out_path, text.encode("utf-8"), mode=0o644)
    click.echo(
        f"{len(kept)} species at ({lat}, {lon}), week {week}, threshold {sf_thresh}", err=True
    )
