"""The ``sevensense`` command line: embed recordings and manage model artifacts.

Exit status of ``embed``: 0 every recording embedded; 1 some recordings failed or were
only partly embedded (the rest are in the output, the summary says which); 2 nothing could
be embedded or the command was wrong.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import numpy as np
from tqdm import tqdm

from sevensense.artifacts.labels import load_full_labels
from sevensense.artifacts.manifest import ModelKind
from sevensense.artifacts.registry import ModelRegistry
from sevensense.audio.decode import probe
from sevensense.audio.live import SampleEncoding
from sevensense.client.stream import FileSource, PcmSource, stdin_source, stream_audio
from sevensense.embeddings.fitting import split_inputs, vectors_from_audio, vectors_from_parquet
from sevensense.embeddings.pca import fit_pca
from sevensense.embeddings.poincare import DEFAULT_MAX_NORM
from sevensense.embeddings.quality import QualityMonitors
from sevensense.embeddings.reducers import ReducerStore
from sevensense.embeddings.transform import (
    PROJECTIONS,
    VectorTransform,
    artifact_sha256,
    load_transform,
)
from sevensense.errors import (
    IndexNotFoundError,
    ModelError,
    RequestError,
    SevensenseError,
    SpeciesFilterError,
)
from sevensense.index.base import VectorIndex
from sevensense.index.ingest import (
    OPERATOR_TENANT,
    Indexer,
    add_parquet,
    parquet_batches,
    parquet_dim,
    parquet_space,
    parquet_transform_and_info,
    space_info,
)
from sevensense.index.records import RecordingRef, SearchFilter, SpaceInfo
from sevensense.index.records import Scope as IndexScope
from sevensense.index.store import index_names, open_index
from sevensense.inference.engine import EmbeddingEngine, EmbedOptions, WindowResult, species_mask
from sevensense.inference.recordings import RunSummary, embed_recordings, expand_paths
from sevensense.inference.sessions import LoadedModel
from sevensense.inference.species_range import (
    ALL_YEAR,
    DEFAULT_THRESHOLD,
    SpeciesFilter,
    SpeciesRangeModel,
    list_filter,
    load_species_list,
    location_filter,
    validate_location,
    validate_threshold,
)
from sevensense.outputs.detections import (
    FORMATS,
    AnalysisParams,
    DetectionCollector,
    DetectionFormat,
    load_species_codes,
    write_detections,
)
from sevensense.outputs.writers import open_writer
from sevensense.serving.stream.protocol import PATH as STREAM_PATH
from sevensense.settings import PROFILE_NAMES, Settings, load_settings
from sevensense.storage.atomic import atomic_write
from sevensense.verification.offline import DEFAULT_VERIFIER, WindowRow, verify_recordings
from sevensense.verification.parquet import VerifyWriter
from sevensense.verification.species_map import species_map_for

EXIT_OK, EXIT_PARTIAL, EXIT_FAILED = 0, 1, 2


def _fail(exc: SevensenseError) -> None:
    click.echo(f"error [{exc.code}]: {exc.message}", err=True)
    sys.exit(EXIT_FAILED)


def _total_seconds(files: list[Path]) -> float:
    """Header durations for the progress bar; unreadable files count as zero here."""
    total = 0.0
    for path in files:
        try:
            total += probe(path).duration_s
        except SevensenseError:
            continue
    return total


def _overlap(model: LoadedModel, overlap: float | None, hop: float | None) -> float | None:
    """``--hop`` (seconds) as the overlap fraction ``--overlap`` gives directly."""
    if hop is None:
        return overlap
    if overlap is not None:
        raise click.UsageError("give --overlap or --hop, not both")
    window_s = model.manifest.window_seconds
    if not 0 < hop <= window_s:
        raise click.UsageError(f"--hop must be in (0, {window_s}] s for {model.identity}")
    return 1.0 - hop / window_s


def _audio_files(paths: tuple[Path, ...]) -> list[Path]:
    files = expand_paths(paths)
    if not files:
        click.echo("error: no audio files found", err=True)
        sys.exit(EXIT_FAILED)
    return files


def _report_failures(summary: RunSummary) -> None:
    for rec in summary.failed:
        err = rec.error or {}
        click.echo(
            f"{rec.status}: {rec.source}: [{err.get('code')}] {err.get('message')}", err=True
        )


def _bar(files: list[Path], quiet: bool, desc: str) -> tqdm:
    return tqdm(
        total=round(_total_seconds(files)),
        unit="s",
        unit_scale=True,
        disable=quiet or None,
        desc=desc,
        file=sys.stderr,
    )


def _progress(bar: tqdm) -> Callable[[WindowResult], None]:
    """Advances ``bar`` by the audio seconds each recording's windows have reached."""
    reached: dict[str, float] = {}

    def progress(result: WindowResult) -> None:
        before = reached.get(result.source, 0.0)
        if result.end_s > before:
            reached[result.source] = result.end_s
            bar.update(result.end_s - before)

    return progress


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj["settings"]
    return settings


F = TypeVar("F", bound=Callable[..., Any])


def _stacked(options: Sequence[Callable[[F], F]], command: F) -> F:
    """Apply click options so they list in the order written."""
    for option in reversed(options):
        command = option(command)
    return command


def species_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--lat/--lon/--week/--sf-thresh or --species-list, as BirdNET-Analyzer spells them."""
    options = [
        click.option("--lat", type=float, default=None, help="latitude of the recording"),
        click.option("--lon", type=float, default=None, help="longitude of the recording"),
        click.option(
            "--week",
            type=int,
            default=ALL_YEAR,
            show_default=True,
            help="week of the year, 1-48 as BirdNET counts it; -1 = all year",
        ),
        click.option(
            "--sf-thresh",
            type=float,
            default=DEFAULT_THRESHOLD,
            show_default=True,
            help="lowest range-model score a species needs to be kept",
        ),
        click.option(
            "--species-list",
            type=click.Path(path_type=Path),
            default=None,
            help="file of allowed species, one Scientific_Common per line",
        ),
    ]
    return _stacked(options, command)


def transform_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--reduce NAME and --project poincare [--curvature C --max-norm M]."""
    options = [
        click.option(
            "--reduce",
            "reduce_ref",
            default=None,
            help="PCA reducer name[:version] (`sevensense reduce fit`) for this model",
        ),
        click.option("--project", type=click.Choice(PROJECTIONS), default=None),
        click.option("--curvature", type=float, default=1.0, show_default=True),
        click.option("--max-norm", type=float, default=DEFAULT_MAX_NORM, show_default=True),
    ]
    return _stacked(options, command)


def index_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Where entries go and whose they are."""
    options = [
        click.option(
            "--tenant",
            default=OPERATOR_TENANT,
            show_default=True,
            help="owner of the entries (the API stores a partner's under its key id)",
        ),
        click.option("--site", default=None, help="site or deployment of the recordings"),
        click.option(
            "--recorded-at", "recorded_at", default=None, help="ISO time the recording started"
        ),
    ]
    return _stacked(options, command)


def _transform(
    settings: Settings,
    model: LoadedModel,
    reduce_ref: str | None,
    project: str | None,
    curvature: float,
    max_norm: float,
) -> VectorTransform:
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


def _species_filter(
    registry: ModelRegistry,
    labels: list[str] | None,
    lat: float | None,
    lon: float | None,
    week: int,
    sf_thresh: float,
    species_list: Path | None,
) -> SpeciesFilter | None:
    """Raises SpeciesFilterError on bad values; UsageError on a bad combination."""
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


def _describe(species: SpeciesFilter | None) -> str:
    if species is None:
        return ""
    detail = ", ".join(
        f"{k} {v}" for k, v in species.summary().items() if k not in ("kind", "size")
    )
    return f"; species filter: {species.kind} ({detail or 'user list'}): {species.size} species"


@click.group()
@click.option(
    "--profile", type=str, default=None, help=f"one of {', '.join(PROFILE_NAMES)} or a TOML path"
)
@click.option("--models-dir", type=click.Path(path_type=Path), default=None, help="registry root")
@click.option("-v", "--verbose", count=True, help="-v info, -vv debug logging")
@click.pass_context
def main(ctx: click.Context, profile: str | None, models_dir: Path | None, verbose: int) -> None:
    """7sense: bioacoustic embeddings and species scores from real recordings."""
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        overrides: dict[str, Any] = {"models_dir": models_dir} if models_dir else {}
        ctx.obj = {"settings": load_settings(profile, **overrides)}
    except SevensenseError as exc:
        _fail(exc)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--model", "model_ref", default=None, help="name[:version][:variant]; default from the profile"
)
@click.option(
    "--out", "out_path", required=True, type=click.Path(path_type=Path), help="output file"
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["parquet", "npz"]),
    default=None,
    help="default: from --out suffix",
)
@click.option("--overlap", type=float, default=None, help="window overlap fraction, e.g. 0.5")
@click.option("--hop", type=float, default=None, help="hop in seconds (alternative to --overlap)")
@click.option(
    "--padding", type=click.Choice(["zero_pad", "reflect", "discard", "overlap_fill"]), default=None
)
@click.option(
    "--energy-threshold",
    type=float,
    default=None,
    help="mean-square below which a window is skipped; 0 = off",
)
@click.option("--top-k", type=int, default=None, help="top-k species per window (default 5)")
@click.option("--include-logits", is_flag=True, help="store raw logits too")
@click.option("--batch-size", type=int, default=None, help="override max batch size")
@click.option("--quiet", is_flag=True, help="no progress bar")
@species_options
@transform_options
@click.option(
    "--index",
    "index_name",
    default=None,
    help="also add the windows to this index (see `sevensense index`), idempotently",
)
@index_options
@click.pass_context
def embed(
    ctx: click.Context,
    paths: tuple[Path, ...],
    model_ref: str | None,
    out_path: Path,
    fmt: str | None,
    overlap: float | None,
    hop: float | None,
    padding: str | None,
    energy_threshold: float | None,
    top_k: int | None,
    include_logits: bool,
    batch_size: int | None,
    quiet: bool,
    lat: float | None,
    lon: float | None,
    week: int,
    sf_thresh: float,
    species_list: Path | None,
    reduce_ref: str | None,
    project: str | None,
    curvature: float,
    max_norm: float,
    index_name: str | None,
    tenant: str,
    site: str | None,
    recorded_at: str | None,
) -> None:
    """Embed recordings (files or directories, recursively) into Parquet or .npz."""
    settings = _settings(ctx)
    if batch_size is not None:
        settings.inference.max_batch_size = batch_size
    fmt = fmt or ("npz" if out_path.suffix == ".npz" else "parquet")
    try:
        engine = EmbeddingEngine(settings)
        model = engine.model(model_ref)
        overlap = _overlap(model, overlap, hop)
        species = _species_filter(
            engine.registry, model.labels, lat, lon, week, sf_thresh, species_list
        )
        options = EmbedOptions(
            overlap=overlap,
            padding=padding,  # type: ignore[arg-type]
            energy_threshold=energy_threshold,
            top_k=top_k,
            include_logits=include_logits,
            species=species.species if species else None,
        )
        transform = _transform(settings, model, reduce_ref, project, curvature, max_norm)
        dim = transform.out_dim(model.manifest.embedding_dim)
        indexer = None
        if index_name is not None:
            when = _parse_time(recorded_at) if recorded_at else None
            hop_s = (
                (1 - (overlap or 0.0)) * model.manifest.window_samples / model.manifest.sample_rate
            )
            info = space_info(model.manifest, transform, hop_s)
            indexer = Indexer(open_index(settings, index_name), info, tenant, site, when)
    except SevensenseError as exc:
        _fail(exc)
    files = _audio_files(paths)
    n_classes = model.manifest.n_classes if include_logits else None
    writer = open_writer(out_path, fmt, dim, n_classes, transform.columns())
    bar = _bar(files, quiet, "audio embedded")
    monitors = QualityMonitors(settings.quality)

    def write(result: WindowResult) -> None:
        out = transform.apply_result(monitors.observe_one(result))
        writer.write(out)
        if indexer is not None:
            indexer.add(out)

    summary = embed_recordings(
        engine, files, write, model=model, options=options, on_window=_progress(bar)
    )
    bar.close()
    report = summary.to_dict()
    if species is not None:
        report["species_filter"] = species.summary()
    if indexer is not None:
        try:
            indexer.flush()
        except SevensenseError as exc:
            _fail(exc)
        finally:
            indexer.index.close()
        report["index"] = {"name": indexer.index.name, "space": indexer.info.key.slug}
        click.echo(
            f"{indexer.added} new of {indexer.seen} windows -> index "
            f"{indexer.index.name}/{indexer.info.key.slug}"
        )
    if not transform.is_identity:
        report["transform"] = transform.describe()
    report["quality"] = [q.model_dump(mode="json") for q in monitors.reports()]
    writer.close(report)
    _report_failures(summary)
    skipped = sum(len(r.skipped) for r in summary.recordings)
    click.echo(
        f"{summary.windows} windows from {len(files) - len(summary.failed)}/{len(files)} files "
        f"({summary.audio_s:.1f} s audio, {skipped} windows skipped) in {summary.wall_s:.2f} s "
        f"[{summary.model} on {summary.provider}] -> {out_path}{_describe(species)}"
        + ("" if transform.is_identity else f"; {dim}-d vectors in space {transform.space_key}")
    )
    if summary.windows == 0:
        sys.exit(EXIT_FAILED)
    sys.exit(EXIT_PARTIAL if summary.failed else EXIT_OK)


@main.command()
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
    "--format", "fmt", type=click.Choice(list(FORMATS)), default="raven", show_default=True
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
@click.option("--quiet", is_flag=True, help="no progress bar")
@species_options
@click.pass_context
def detect(
    ctx: click.Context,
    paths: tuple[Path, ...],
    model_ref: str | None,
    out_path: Path,
    fmt: DetectionFormat,
    min_conf: float,
    top_k: int | None,
    combined: bool,
    overlap: float | None,
    hop: float | None,
    quiet: bool,
    lat: float | None,
    lon: float | None,
    week: int,
    sf_thresh: float,
    species_list: Path | None,
) -> None:
    """Species detections per window in BirdNET-Analyzer's formats (Raven, Audacity, CSV,
    Kaleidoscope) or Parquet."""
    settings = _settings(ctx)
    try:
        engine = EmbeddingEngine(settings)
        model = engine.model(model_ref)
        spec = model.manifest.labels
        if spec is None or not model.manifest.n_classes:
            raise ModelError(f"{model.identity} has no classifier: nothing to detect")
        labels = load_full_labels(spec, model.artifact.directory)
        species = _species_filter(
            engine.registry, model.labels, lat, lon, week, sf_thresh, species_list
        )
        codes = load_species_codes(model.artifact.directory)
        window_s = model.manifest.window_seconds
        overlap = _overlap(model, overlap, hop)
    except SevensenseError as exc:
        _fail(exc)
    files = _audio_files(paths)
    single_file = out_path.suffix != "" and not out_path.is_dir()
    if single_file and fmt == "audacity" and len(files) > 1:
        raise click.UsageError("Audacity labels name no file: give a directory as --out")
    options = EmbedOptions(overlap=overlap, top_k=0, include_logits=True)
    allowed = species_mask(model.labels, species.species if species else None)
    collector = DetectionCollector(labels, min_conf=min_conf, top_k=top_k, allowed=allowed)
    bar = _bar(files, quiet, "audio analysed")
    summary = embed_recordings(
        engine,
        files,
        collector.add,
        model=model,
        options=options,
        on_window=_progress(bar),
    )
    bar.close()
    recordings = [
        collector.recording(r.source, r.duration_s, r.sample_rate or model.manifest.sample_rate)
        for r in summary.recordings
        if r.status != "failed"
    ]
    located = species is not None and species.kind == "location"
    params = AnalysisParams(
        lat=lat if located and lat is not None else -1.0,
        lon=lon if located and lon is not None else -1.0,
        week=week if located else -1.0,
        overlap=round(window_s * (overlap or 0.0), 4),
    )
    root = paths[0] if len(paths) == 1 and paths[0].is_dir() else None
    written = write_detections(
        recordings,
        fmt,
        out_path,
        single_file=single_file,
        combined=combined,
        root=root,
        codes=codes,
        params=params,
    )
    _report_failures(summary)
    found = sum(len(r.detections) for r in recordings)
    click.echo(
        f"{found} detections in {summary.windows} windows from {len(recordings)}/{len(files)} "
        f"files ({summary.audio_s:.1f} s audio) in {summary.wall_s:.2f} s "
        f"[{summary.model} on {summary.provider}] -> {', '.join(str(p) for p in written[:3])}"
        + (f" (+{len(written) - 3} more)" if len(written) > 3 else "")
        + _describe(species)
    )
    if not recordings:
        sys.exit(EXIT_FAILED)
    sys.exit(EXIT_PARTIAL if summary.failed else EXIT_OK)


@main.command()
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
    settings = _settings(ctx)
    try:
        validate_location(lat, lon, week)
        validate_threshold(sf_thresh)
        kept = SpeciesRangeModel.from_registry(ModelRegistry(settings.models_dir)).species_list(
            lat, lon, week, sf_thresh
        )
    except SevensenseError as exc:
        _fail(exc)
    text = "".join(f"{s.scientific}_{s.common}\n" for s in kept)
    if out_path is None:
        click.echo(text, nl=False)
    else:
        atomic_write(out_path, text.encode("utf-8"), mode=0o644)
    click.echo(
        f"{len(kept)} species at ({lat}, {lon}), week {week}, threshold {sf_thresh}", err=True
    )


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--limit", type=int, default=20, help="rows to show (0 = all)")
def show(path: Path, limit: int) -> None:
    """Print the windows of a Parquet result: time span and top species."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["source", "start_s", "end_s", "top_labels", "top_scores"])
    rows = table.to_pylist()
    for row in rows[: limit or None]:
        top = ", ".join(
            f"{label} {score:.2f}"
            for label, score in zip(row["top_labels"][:3], row["top_scores"][:3], strict=False)
        )
        click.echo(
            f"{Path(row['source']).name:<28} {row['start_s']:8.2f}-{row['end_s']:<8.2f} {top}"
        )
    if limit and len(rows) > limit:
        click.echo(f"... {len(rows) - limit} more windows")


@main.group()
def models() -> None:
    """List, build, pull, import and verify model artifacts."""


def _registry(ctx: click.Context) -> ModelRegistry:
    return ModelRegistry(_settings(ctx).models_dir)


class _DownloadBar:
    """tqdm fed by the downloader's (done, total) callbacks."""

    def __init__(self) -> None:
        self.bar: tqdm[Any] | None = None

    def __call__(self, done: int, total: int | None) -> None:
        if self.bar is None:
            self.bar = tqdm(
                total=total, unit="B", unit_scale=True, desc="download", file=sys.stderr
            )
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@models.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--kind",
    type=click.Choice(["audio", "range"]),
    default="audio",
    show_default=True,
    help="audio (embedding) models, or species range models",
)
@click.pass_context
def models_list(ctx: click.Context, as_json: bool, kind: ModelKind) -> None:
    """Artifacts in the registry, with whether their weights are present."""
    rows = []
    for a in _registry(ctx.find_root()).artifacts(kind=kind):
        m = a.manifest
        audio = m.kind == "audio"
        rows.append(
            {
                "model": str(m.identity),
                "present": a.present,
                "size_bytes": m.size_bytes,
                "sha256": m.sha256 or f"(hint {m.sha256_hint})",
                "window": f"{m.window_seconds:g} s @ {m.sample_rate} Hz" if audio else "-",
                "embedding_dim": m.embedding_dim if audio else None,
                "test_artifact": m.test_artifact,
                "license": m.license,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        flag = "present" if r["present"] else "missing (pull)"
        test = " TEST-ARTIFACT" if r["test_artifact"] else ""
        click.echo(
            f"{r['model']:<32} {flag:<15} {r['window']:<18} dim={r['embedding_dim'] or '-'!s:<5} "
            f"{str(r['sha256'])[:16]}{test}"
        )


@models.command("build")
@click.option("--force", is_flag=True, help="rebuild even when a valid artifact exists")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None)
@click.pass_context
def models_build(ctx: click.Context, force: bool, cache_dir: Path | None) -> None:
    """Build the artifacts that run here (BirdNET v2.4, the Perch-contract test model)."""
    from sevensense.builders.build import build_all
    from sevensense.settings import repo_root

    registry = _registry(ctx.find_root())
    try:
        for artifact in build_all(registry, cache_dir or repo_root() / ".cache", force=force):
            m = artifact.manifest
            click.echo(f"ok {m.identity} sha256={m.sha256} ({m.size_bytes} bytes)")
    except SevensenseError as exc:
        _fail(exc)


@models.command("quantize")
@click.argument("ref")
@click.option(
    "--method",
    type=click.Choice(["dynamic", "static", "fp16"]),
    default="dynamic",
    show_default=True,
    help="dynamic: the int8 `quantized` variant; static: `int8-static` (calibrated); "
    "fp16: `fp16` for GPUs",
)
@click.option(
    "--calibration",
    type=click.Path(exists=True, path_type=Path),
    multiple=True,
    help="recordings or directories to calibrate on (static; default: shared test audio)",
)
@click.option(
    "--holdout",
    type=click.Path(exists=True, path_type=Path),
    multiple=True,
    help="other recordings or directories to measure quality on (default: shared test audio)",
)
@click.option("--force", is_flag=True, help="requantize even when an up-to-date variant exists")
@click.pass_context
def models_quantize(
    ctx: click.Context,
    ref: str,
    method: str,
    calibration: tuple[Path, ...],
    holdout: tuple[Path, ...],
    force: bool,
) -> None:
    """Build a reduced-precision variant of a model and print its measured quality.

    A static or fp16 variant that fails its quality bar is not registered (exit 2)."""
    from sevensense.builders.build import build_quantized, build_variant

    try:
        if method == "dynamic":
            artifact = build_quantized(
                _registry(ctx.find_root()), ref, force=force, holdout=list(holdout) or None
            )
        else:
            artifact = build_variant(
                _registry(ctx.find_root()),
                ref,
                method,
                calibration=list(calibration) or None,
                holdout=list(holdout) or None,
                force=force,
            )
    except SevensenseError as exc:
        _fail(exc)
    m = artifact.manifest
    click.echo(f"ok {m.identity} sha256={m.sha256} ({m.size_bytes} bytes)")
    for key, value in m.quality.items():
        click.echo(f"  {key:<24} {value:g}")
    click.echo(f"  {'source':<24} {m.source}")


@models.command("verify")
@click.argument("refs", nargs=-1)
@click.pass_context
def models_verify(ctx: click.Context, refs: tuple[str, ...]) -> None:
    """Check size, SHA-256 and I/O contract of present artifacts (or the named ones)."""
    registry = _registry(ctx.find_root())
    targets = (
        [registry.resolve(r, kind=None) for r in refs]
        if refs
        else [a for a in registry.artifacts() if a.present]
    )
    bad = 0
    for artifact in targets:
        try:
            registry.verify(artifact, use_cache=False)
            click.echo(f"ok {artifact.manifest.identity}")
        except SevensenseError as exc:
            bad += 1
            click.echo(f"FAIL {artifact.manifest.identity}: [{exc.code}] {exc.message}", err=True)
    sys.exit(EXIT_PARTIAL if bad else EXIT_OK)


@models.command("pull")
@click.argument("ref")
@click.option("--url", default=None, help="mirror to download from instead of the manifest source")
@click.option("--sha256", default=None, help="pin the expected digest")
@click.pass_context
def models_pull(ctx: click.Context, ref: str, url: str | None, sha256: str | None) -> None:
    """Download a catalogued model (e.g. perch-v2), resumably, and verify it."""
    from sevensense.artifacts.fetch import pull

    bar = _DownloadBar()
    try:
        artifact = pull(_registry(ctx.find_root()), ref, url=url, sha256=sha256, progress=bar)
    except SevensenseError as exc:
        _fail(exc)
    finally:
        bar.close()
    click.echo(f"ok {artifact.manifest.identity} sha256={artifact.manifest.sha256}")


@models.command("import")
@click.argument("location")
@click.option("--ref", default=None, help="name:version:variant of a catalogued manifest")
@click.option("--manifest", "manifest_path", type=click.Path(path_type=Path), default=None)
@click.option("--sha256", default=None, help="pin the expected digest")
@click.pass_context
def models_import(
    ctx: click.Context,
    location: str,
    ref: str | None,
    manifest_path: Path | None,
    sha256: str | None,
) -> None:
    """Import a model from a path, http(s):// or s3:// URL, verify it and register it."""
    from sevensense.artifacts.fetch import import_artifact

    try:
        artifact = import_artifact(
            _registry(ctx.find_root()),
            location,
            ref=ref,
            manifest_path=manifest_path,
            sha256=sha256,
        )
    except SevensenseError as exc:
        _fail(exc)
    click.echo(f"ok {artifact.manifest.identity} sha256={artifact.manifest.sha256}")


@main.group()
def reduce() -> None:
    """PCA reducers (ADR-007 §3.2): fit one on a model's embeddings, list them."""


@reduce.command("fit")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--model", "model_ref", default=None, help="name[:version][:variant]; default from the profile"
)
@click.option("--dim", type=click.IntRange(1), required=True, help="dimensions to keep")
@click.option("--name", default=None, help="reducer name; default <model>-pca<dim>")
@click.option("--version", "version", default=None, help="default: the next integer")
@click.option("--overlap", type=float, default=None, help="audio inputs: window overlap")
@click.option("--hop", type=float, default=None, help="audio inputs: hop in seconds")
@click.pass_context
def reduce_fit(
    ctx: click.Context,
    inputs: tuple[Path, ...],
    model_ref: str | None,
    dim: int,
    name: str | None,
    version: str | None,
    overlap: float | None,
    hop: float | None,
) -> None:
    """Fit a PCA reducer on INPUTS (Parquet files of `sevensense embed` for this model, or
    recordings and directories, embedded here) and store it beside the models."""
    settings = _settings(ctx)
    try:
        engine = EmbeddingEngine(settings)
        model = engine.model(model_ref)
        manifest = model.manifest
        parquet, audio = split_inputs(inputs)
        blocks = [vectors_from_parquet(p, manifest) for p in parquet]
        if audio:
            options = EmbedOptions(overlap=_overlap(model, overlap, hop), top_k=0)
            blocks.append(vectors_from_audio(engine, _audio_files(tuple(audio)), model, options))
        vectors = np.concatenate(blocks) if blocks else np.zeros((0, manifest.embedding_dim))
        pca = fit_pca(vectors, dim)
        reducer = ReducerStore(settings.models_dir).save(
            pca,
            name=name or f"{manifest.name}-pca{dim}",
            version=version,
            model_name=manifest.name,
            model_version=manifest.version,
            model_variant=manifest.variant,
            model_sha256=artifact_sha256(model.artifact),
            sources=[str(p) for p in inputs],
        )
    except SevensenseError as exc:
        _fail(exc)
    m = reducer.manifest
    click.echo(
        f"reducer {m.ref} for {manifest.identity}: {m.in_dim} -> {m.out_dim} dims, "
        f"fitted on {m.n_windows} windows, explained variance kept {m.explained_variance:.4f} "
        f"-> {reducer.directory}"
    )


@reduce.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def reduce_list(ctx: click.Context, as_json: bool) -> None:
    """The reducers beside the models, and which model each belongs to."""
    try:
        manifests = ReducerStore(_settings(ctx).models_dir).manifests()
    except SevensenseError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps([m.model_dump(mode="json") for m in manifests], indent=2))
        return
    for m in manifests:
        click.echo(
            f"{m.ref:<32} {m.model_name}:{m.model_version}  {m.in_dim}->{m.out_dim}  "
            f"{m.n_windows} windows  variance kept {m.explained_variance:.4f}"
        )


@main.group()
def keys() -> None:
    """Issue, list and revoke API keys (the key file of the serving settings)."""


def _key_file(ctx: click.Context) -> Path:
    from sevensense.serving.access.keys import key_file_path

    return key_file_path(_settings(ctx).serving)


@keys.command("add")
@click.argument("key_id", metavar="ID")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(["embed", "read", "admin"]),
    help="repeatable; default: embed and read",
)
@click.option("--rate-limit", type=float, default=None, help="requests/s, overrides the default")
@click.option("--replace", is_flag=True, help="rotate: replace the key of an existing ID")
@click.pass_context
def keys_add(
    ctx: click.Context,
    key_id: str,
    scopes: tuple[str, ...],
    rate_limit: float | None,
    replace: bool,
) -> None:
    """Issue a key. It is printed once, here; only its SHA-256 is stored."""
    from sevensense.identity import PARTNER_SCOPES
    from sevensense.serving.access.keys import add_key

    path = _key_file(ctx.find_root())
    try:
        key = add_key(path, key_id, scopes or PARTNER_SCOPES, rate_limit, replace=replace)
    except SevensenseError as exc:
        _fail(exc)
    click.echo(key)
    click.echo(f"key {key_id!r} stored in {path}; it cannot be shown again", err=True)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def keys_list(ctx: click.Context, as_json: bool) -> None:
    """Key ids, scopes and rate limits (file keys and keys from the settings)."""
    from sevensense.serving.access.keys import list_keys

    settings = _settings(ctx.find_root())
    path = _key_file(ctx.find_root())
    try:
        rows = [(r, "file") for r in list_keys(path)]
    except SevensenseError as exc:
        _fail(exc)
    rows += [(r, "settings") for r in settings.serving.api_keys]
    if as_json:
        payload = [{**r.model_dump(mode="json"), "source": source} for r, source in rows]
        click.echo(json.dumps(payload, indent=2))
        return
    for record, source in rows:
        limit = f"{record.rate_limit_per_s:g}/s" if record.rate_limit_per_s else "default"
        click.echo(
            f"{record.id:<24} {','.join(record.scopes):<18} {limit:<10} "
            f"{record.sha256[:12]}  {source}"
        )
    if not rows:
        click.echo(f"no keys ({path} has none)", err=True)


@keys.command("revoke")
@click.argument("key_id", metavar="ID")
@click.pass_context
def keys_revoke(ctx: click.Context, key_id: str) -> None:
    """Remove a key from the key file; running services drop it within seconds."""
    from sevensense.serving.access.keys import revoke_key

    path = _key_file(ctx.find_root())
    try:
        revoke_key(path, key_id)
    except SevensenseError as exc:
        if any(r.id == key_id for r in _settings(ctx.find_root()).serving.api_keys):
            click.echo(
                f"error: key {key_id!r} comes from the settings (SEVENSENSE_SERVING__API_KEYS), "
                "not the key file; remove it there",
                err=True,
            )
            sys.exit(EXIT_FAILED)
        _fail(exc)
    click.echo(f"revoked {key_id!r} in {path}")


@keys.command("dev")
@click.pass_context
def keys_dev(ctx: click.Context) -> None:
    """Print the local quick-start key, creating it only when no key is configured at all."""
    from sevensense.serving.access.keys import ensure_dev_key

    key = ensure_dev_key(_settings(ctx.find_root()).serving)
    if key is None:
        click.echo(
            "keys are configured; no dev key is issued (see `sevensense keys list`)", err=True
        )
        sys.exit(EXIT_FAILED)
    click.echo(key)


@models.command("labels-map")
@click.argument("model_ref")
@click.argument("against", default=DEFAULT_VERIFIER)
@click.option("--unmatched", is_flag=True, help="list the classes of AGAINST that do not map")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def models_labels_map(
    ctx: click.Context, model_ref: str, against: str, unmatched: bool, as_json: bool
) -> None:
    """How many of AGAINST's classes (BirdNET v2.4 by default) map to MODEL_REF's, by
    scientific name; sound-event classes never map. Needs only the label files."""
    registry = _registry(ctx)
    try:
        primary = registry.resolve(model_ref, default_variant="base")
        verifier = registry.resolve(against, default_variant="base")
        mapping = species_map_for(primary, verifier)
    except SevensenseError as exc:
        _fail(exc)
    missing = mapping.unmatched_verifier()
    if as_json:
        body = {
            "model": str(primary.manifest.identity),
            "against": str(verifier.manifest.identity),
            **mapping.summary(),
        }
        if unmatched:
            body["unmatched"] = missing
        click.echo(json.dumps(body, indent=2))
        return
    events = mapping.shared_sound_events
    click.echo(
        f"{mapping.mapped:,} of {len(mapping.verifier_labels):,} classes of "
        f"{verifier.manifest.identity} map to {primary.manifest.identity} "
        f"({len(mapping.primary_labels):,} classes); {len(missing):,} do not"
        + (
            f" ({len(events)} of them share a name but are sound events, never matched: "
            f"{', '.join(events)})"
            if events
            else ""
        )
    )
    if unmatched:
        for name in missing:
            click.echo(name)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--model", "model_ref", required=True, help="the model to verify: name[:version][:variant]"
)
@click.option(
    "--against", default=DEFAULT_VERIFIER, show_default=True, help="the verifier (BirdNET v2.4)"
)
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.pass_context
def verify(
    ctx: click.Context,
    paths: tuple[Path, ...],
    model_ref: str,
    against: str,
    out_path: Path,
    as_json: bool,
) -> None:
    """Top-5 agreement of MODEL's species with BirdNET's on the same audio (ADR-007 §7):
    per recording and overall, and one Parquet row per window. Exit 0 all recordings
    verified, 1 some failed, 2 nothing verified or bad usage."""
    settings = _settings(ctx)
    files = _audio_files(paths)
    engine = EmbeddingEngine(settings)
    writer = VerifyWriter(out_path)

    def sink(row: WindowRow) -> None:
        writer.write(row)

    try:
        report = verify_recordings(
            files, model=model_ref, against=against, engine=engine, sink=sink
        )
    except SevensenseError as exc:
        writer.abort()
        _fail(exc)
    writer.close(report)
    if as_json:
        click.echo(report.model_dump_json(indent=2))
    if report.trivial:
        click.echo(f"{report.primary}: verified trivially: {report.trivial_reason}")
        sys.exit(EXIT_OK)

    def line(name: str, windows: int, counted: int, mean: float | None, share: float | None) -> str:
        if mean is None:
            return f"{name}: {windows} windows, none with BirdNET >= {report.birdnet_threshold}"
        return (
            f"{name}: {windows} windows, {counted} counted, mean agreement {mean:.3f}, "
            f"{share or 0.0:.0%} at >= 0.8"
        )

    for rec in report.recordings:
        if rec.status == "failed":
            err = rec.error or {}
            click.echo(f"failed: {rec.source}: [{err.get('code')}] {err.get('message')}", err=True)
            continue
        click.echo(line(rec.source, rec.windows, rec.counted, rec.mean, rec.share_ge_0_8))
    o = report.overall
    click.echo(
        line(
            f"overall [{report.primary} vs {report.against}, {report.mapped_classes} mapped "
            f"classes]",
            o.windows,
            o.counted,
            o.mean,
            o.share_ge_0_8,
        )
        + f"; {o.discrepancies} discrepancies -> {out_path}"
    )
    failed = [r for r in report.recordings if r.status != "ok"]
    if len(failed) == len(report.recordings):
        sys.exit(EXIT_FAILED)
    sys.exit(EXIT_PARTIAL if failed else EXIT_OK)


def _figure(figure: dict[str, Any]) -> str:
    def fmt(v: object) -> str:
        return f"{v:.6g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{k} {fmt(v)}" for k, v in figure.items())


@main.command("check")
@click.argument("ref")
@click.option(
    "--audio",
    "audio_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="reference recordings (default ../shared/audio); results are then not stored",
)
@click.option("--json", "as_json", is_flag=True, help="the result as JSON")
@click.option("--rerun", is_flag=True, help="ignore a stored result for these weights")
@click.pass_context
def check(ctx: click.Context, ref: str, audio_dir: Path | None, as_json: bool, rerun: bool) -> None:
    """ADR-007 Appendix B on a reference set: each item's figure and pass/fail.

    Exit 0 every item passes (or is n/a), 1 some item fails, 2 the check could not run.
    On the default reference set the result is stored beside the artifact (keyed by its
    SHA-256 and the checklist version) and is what the rollout gate uses."""
    from sevensense.quality_gate.checklist import run_check
    from sevensense.quality_gate.store import checked

    settings = _settings(ctx)
    try:
        engine = EmbeddingEngine(settings)
        artifact = engine.registry.resolve(ref, default_variant=settings.inference.model_variant)
        engine.registry.verify(artifact)
        if audio_dir is None:
            result = checked(engine, artifact, rerun=rerun).result
        else:
            result = run_check(engine, str(artifact.manifest.identity), audio_dir)
    except SevensenseError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(result.model_dump(mode="json"), indent=2))
    else:
        for it in result.items:
            click.echo(f"{it.status.upper():5} {it.id:18} {_figure(it.figure)}")
            if it.detail:
                click.echo(f"{'':24}{it.detail}")
        verdict = "passed" if result.passed else "FAILED: " + ", ".join(result.failed())
        click.echo(
            f"{result.model} (sha256 {result.sha256[:12]}…, checklist v{result.checklist_version},"
            f" {result.windows} windows, {result.seconds:.1f} s): {verdict}"
        )
    sys.exit(result.exit_code())


# --- similarity search (issue 12) ------------------------------------------------------------


def _open_index(settings: Settings, name: str | None) -> VectorIndex:
    try:
        return open_index(settings, name)
    except SevensenseError as exc:
        _fail(exc)
        raise  # unreachable: _fail exits


def _parse_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _search_filter(items: tuple[str, ...]) -> SearchFilter:
    """``recording=PREFIX``, ``site=NAME``, ``from=TIME``, ``to=TIME``."""
    fields: dict[str, Any] = {}
    names = {"recording": "recording_prefix", "site": "site", "from": "time_from", "to": "time_to"}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in names:
            raise click.BadParameter(
                f"{item!r}: use recording=PREFIX, site=NAME, from=TIME or to=TIME",
                param_hint="--filter",
            )
        fields[names[key]] = _parse_time(value) if key in ("from", "to") else value
    return SearchFilter(**fields)


@main.group("index")
def index_group() -> None:
    """Similarity-search indexes: a named index is the configured backend (hoplite
    directories or pgvector tables) plus its spaces, one per model version and transform."""


@index_group.command("add")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--index", "index_name", default=None, help="index name (default: index.name)")
@click.option("--recording-id", default=None, help="store under this id (default: each source)")
@index_options
@click.pass_context
def index_add(
    ctx: click.Context,
    files: tuple[Path, ...],
    index_name: str | None,
    recording_id: str | None,
    tenant: str,
    site: str | None,
    recorded_at: str | None,
) -> None:
    """Add the windows of Parquet files written by `sevensense embed` (idempotent)."""
    settings = _settings(ctx)
    index = _open_index(settings, index_name)
    registry = ModelRegistry(settings.models_dir)
    when = _parse_time(recorded_at) if recorded_at else None
    try:
        for path in files:
            info, seen, added = add_parquet(
                settings,
                registry,
                index,
                path,
                tenant,
                recording_id=recording_id,
                site=site,
                time=when,
            )
            click.echo(f"{path}: {added} new of {seen} windows -> {index.name}/{info.key.slug}")
    except SevensenseError as exc:
        _fail(exc)
    finally:
        index.close()


@index_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def index_list(ctx: click.Context, as_json: bool) -> None:
    """The named indexes of the configured backend and their spaces."""
    settings = _settings(ctx)
    try:
        names = index_names(settings)
        listing = {}
        for name in names:
            index = open_index(settings, name)
            listing[name] = [s.model_dump(mode="json") for s in index.spaces()]
            index.close()
    except SevensenseError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps({"backend": settings.index.backend, "indexes": listing}, indent=2))
        return
    click.echo(f"backend {settings.index.backend}")
    for name, spaces in listing.items():
        click.echo(name)
        for s in spaces:
            click.echo(f"  {SpaceInfo.model_validate(s).key.slug}  {s['dim']}-d  {s['metric']}")


@index_group.command("stats")
@click.option("--index", "index_name", default=None, help="index name (default: index.name)")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def index_stats(ctx: click.Context, index_name: str | None, as_json: bool) -> None:
    """Entries, recordings, tenants and size of each space."""
    settings = _settings(ctx)
    index = _open_index(settings, index_name)
    try:
        stats = index.stats()
    except SevensenseError as exc:
        _fail(exc)
    finally:
        index.close()
    if as_json:
        click.echo(json.dumps([s.model_dump(mode="json") for s in stats], indent=2))
        return
    if not stats:
        click.echo(f"index {index.name} [{settings.index.backend}]: no spaces yet")
    for s in stats:
        size = f"{s.size_bytes / 1e6:.1f} MB" if s.size_bytes is not None else "?"
        click.echo(
            f"{s.index}/{s.space.key.slug} [{s.backend}] {s.entries} windows, "
            f"{s.recordings} recordings, {s.tenants} tenants, {s.space.dim}-d, {size}"
        )


@index_group.command("delete")
@click.option("--index", "index_name", default=None, help="index name (default: index.name)")
@click.option("--recording", "recording_id", required=True, help="recording id to delete")
@click.option("--tenant", default=None, help="only this tenant's (default: every tenant's)")
@click.pass_context
def index_delete(
    ctx: click.Context, index_name: str | None, recording_id: str, tenant: str | None
) -> None:
    """Delete a recording's windows from every space of the index."""
    settings = _settings(ctx)
    index = _open_index(settings, index_name)
    try:
        removed = index.delete_recording(
            recording_id, IndexScope.of(tenant) if tenant else IndexScope.everyone()
        )
    except SevensenseError as exc:
        _fail(exc)
    finally:
        index.close()
    click.echo(f"{removed} windows of {recording_id} deleted from {index.name}")


@index_group.command("reindex")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--index", "index_name", default=None, help="index name (default: index.name)")
@click.option("--model", "model_ref", default=None, help="the new model name[:version][:variant]")
@click.option(
    "--from-space",
    "from_space",
    default=None,
    help="re-embed the recordings of this space (slug from `index list`), keeping their "
    "ids, tenants, sites and times",
)
@click.option("--overlap", type=float, default=None, help="window overlap fraction")
@click.option("--hop", type=float, default=None, help="hop in seconds")
@transform_options
@index_options
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.pass_context
def index_reindex(
    ctx: click.Context,
    paths: tuple[Path, ...],
    index_name: str | None,
    model_ref: str | None,
    from_space: str | None,
    overlap: float | None,
    hop: float | None,
    reduce_ref: str | None,
    project: str | None,
    curvature: float,
    max_norm: float,
    tenant: str,
    site: str | None,
    recorded_at: str | None,
    quiet: bool,
) -> None:
    """Rebuild one space from scratch: from Parquet files (their space), or by embedding
    audio (PATHS, or the sources of --from-space) with --model, e.g. a new model version.
    The target space is emptied first; other spaces are untouched."""
    settings = _settings(ctx)
    index = _open_index(settings, index_name)
    parquet = [p for p in paths if p.suffix == ".parquet"]
    audio = [p for p in paths if p.suffix != ".parquet"]
    try:
        if parquet:
            if audio or from_space:
                raise RequestError("give Parquet files, or audio/--from-space, not both")
            registry = ModelRegistry(settings.models_dir)
            spaces = {parquet_space(p) for p in parquet}
            if len(spaces) != 1:
                raise RequestError("the Parquet files come from more than one space")
            _, info = parquet_transform_and_info(
                settings, registry, spaces.pop(), parquet_dim(parquet[0])
            )
            index.drop_space(info.key)
            total = 0
            when = _parse_time(recorded_at) if recorded_at else None
            for p in parquet:
                total += add_parquet(settings, registry, index, p, tenant, site=site, time=when)[2]
            click.echo(f"{info.key.slug}: rebuilt with {total} windows")
            return
        sources: list[RecordingRef] = []
        if from_space:
            old = next((s for s in index.spaces() if s.key.slug == from_space), None)
            if old is None:
                raise IndexNotFoundError(f"index {index.name!r} has no space {from_space!r}")
            sources = index.recordings(old.key)
        when = _parse_time(recorded_at) if recorded_at else None
        sources += [
            RecordingRef(recording_id=str(p), source=str(p), tenant=tenant, site=site, time=when)
            for p in (_audio_files(tuple(audio)) if audio else [])
        ]
        if not sources:
            raise RequestError("nothing to reindex: give Parquet or audio files, or --from-space")
        engine = EmbeddingEngine(settings)
        model = engine.model(model_ref)
        transform = _transform(settings, model, reduce_ref, project, curvature, max_norm)
        hop_overlap = _overlap(model, overlap, hop)
        info = space_info(model.manifest, transform)
        if from_space == info.key.slug:
            raise RequestError("--from-space is the target space itself; choose the new model")
        index.drop_space(info.key)
        options = EmbedOptions(overlap=hop_overlap, top_k=0)
        added = 0
        missing = []
        for ref in sources:
            path = Path(ref.source)
            if not path.is_file():
                missing.append(ref.source)
                continue
            indexer = Indexer(
                index, info, ref.tenant, ref.site, ref.time, {str(path): ref.recording_id}
            )
            embed_recordings(
                engine,
                [path],
                lambda r, i=indexer: i.add(transform.apply_result(r)),  # type: ignore[misc]
                model=model,
                options=options,
            )
            indexer.flush()
            added += indexer.added
        click.echo(
            f"{info.key.slug}: rebuilt with {added} windows of {len(sources) - len(missing)} "
            "recordings"
            + (f"; {len(missing)} sources not found: {', '.join(missing[:5])}" if missing else "")
        )
    except SevensenseError as exc:
        _fail(exc)
    finally:
        index.close()


@main.command()
@click.argument("query", type=click.Path(exists=True, path_type=Path))
@click.option("--index", "index_name", default=None, help="index name (default: index.name)")
@click.option("-k", "k", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--window", type=click.IntRange(0), default=None, help="only this query window")
@click.option(
    "--filter",
    "filters",
    multiple=True,
    help="recording=PREFIX, site=NAME, from=ISO-TIME, to=ISO-TIME (repeatable)",
)
@click.option("--metric", type=click.Choice(["cosine", "poincare"]), default=None)
@click.option("--model", "model_ref", default=None, help="embed an audio query with this model")
@click.option("--tenant", default=None, help="search only this tenant's entries")
@click.option("--overlap", type=float, default=None, help="window overlap of an audio query")
@transform_options
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def search(
    ctx: click.Context,
    query: Path,
    index_name: str | None,
    k: int,
    window: int | None,
    filters: tuple[str, ...],
    metric: str | None,
    model_ref: str | None,
    tenant: str | None,
    overlap: float | None,
    reduce_ref: str | None,
    project: str | None,
    curvature: float,
    max_norm: float,
    as_json: bool,
) -> None:
    """Neighbours of each window of QUERY (audio, or a Parquet file of `sevensense embed`)."""
    settings = _settings(ctx)
    flt = _search_filter(filters)
    index = _open_index(settings, index_name)
    try:
        if query.suffix == ".parquet":
            registry = ModelRegistry(settings.models_dir)
            _, info = parquet_transform_and_info(
                settings, registry, parquet_space(query), parquet_dim(query)
            )
            batches = list(parquet_batches(query, "query"))
            vectors = np.concatenate([b.vectors for b in batches])
            spans = [(m.source, m.start_s, m.end_s) for b in batches for m in b.meta]
        else:
            engine = EmbeddingEngine(settings)
            model = engine.model(model_ref)
            transform = _transform(settings, model, reduce_ref, project, curvature, max_norm)
            info = space_info(model.manifest, transform)
            options = EmbedOptions(overlap=overlap, top_k=0)
            results = [
                transform.apply_result(r)
                for r in engine.embed_file(query, model=model, options=options)
            ]
            if not results:
                raise RequestError(f"{query}: no windows to search with")
            vectors = np.stack([r.embedding for r in results])
            spans = [(r.source, r.start_s, r.end_s) for r in results]
        chosen = range(len(vectors)) if window is None else [window]
        if window is not None and window >= len(vectors):
            raise RequestError(f"--window {window}: the query has {len(vectors)} windows")
        scope = IndexScope.of(tenant) if tenant else IndexScope.everyone()
        found = index.search(
            info.key,
            vectors[list(chosen)],
            k,
            scope,
            flt,
            metric or info.metric,  # type: ignore[arg-type]
        )
    except SevensenseError as exc:
        _fail(exc)
    finally:
        index.close()
    if as_json:
        answer = [
            {
                "window": i,
                "start_s": spans[i][1],
                "end_s": spans[i][2],
                "neighbours": [n.model_dump(mode="json") for n in hits],
            }
            for i, hits in zip(chosen, found, strict=True)
        ]
        click.echo(json.dumps({"space": info.key.slug, "queries": answer}, indent=2))
        return
    for i, hits in zip(chosen, found, strict=True):
        click.echo(f"query window {i} ({spans[i][1]:.2f}-{spans[i][2]:.2f} s) in {info.key.slug}:")
        for rank_, n in enumerate(hits, 1):
            click.echo(
                f"  {rank_:3d}  {n.recording_id}  {n.start_s:.2f}-{n.end_s:.2f} s  "
                f"similarity {n.score:.4f}"
            )


from sevensense.worker.cli import worker  # noqa: E402  (the worker lives in its own package)


@main.command()
@click.argument("source")
@click.option("--url", required=True, help="the service, e.g. http://host:3000 (or ws://…/stream)")
@click.option("--api-key", envvar="SEVENSENSE_API_KEY", default=None, help="or $SEVENSENSE_API_KEY")
@click.option("--model", default=None, help="name (canary-routed) or name:version[:variant]")
@click.option(
    "--speed",
    type=click.FloatRange(0.0),
    default=1.0,
    show_default=True,
    help="× real time for a file; 0 = as fast as the server reads",
)
@click.option("--frame-ms", type=click.FloatRange(1.0), default=100.0, show_default=True)
@click.option("--rate", type=int, default=None, help="stdin: sample rate of the raw PCM")
@click.option("--channels", type=int, default=1, show_default=True, help="stdin: interleaved")
@click.option(
    "--encoding",
    type=click.Choice([e.value for e in SampleEncoding]),
    default="s16le",
    show_default=True,
    help="stdin: sample format",
)
@click.option("--stream-id", default=None, help="name the stream (resumption, index)")
@click.option("--overlap", type=float, default=None, help="window overlap fraction")
@click.option("--top-k", type=int, default=None, help="species per window")
@click.option("--no-embedding", is_flag=True, help="species only: smaller messages")
@click.option("--lat", type=float, default=None)
@click.option("--lon", type=float, default=None)
@click.option("--week", type=int, default=-1)
@click.option("--index", "index_windows", is_flag=True, help="store windows in the index")
@click.option("--retries", type=int, default=5, show_default=True, help="reconnects in a row")
def stream(
    source: str,
    url: str,
    api_key: str | None,
    model: str | None,
    speed: float,
    frame_ms: float,
    rate: int | None,
    channels: int,
    encoding: str,
    stream_id: str | None,
    overlap: float | None,
    top_k: int | None,
    no_embedding: bool,
    lat: float | None,
    lon: float | None,
    week: int,
    index_windows: bool,
    retries: int,
) -> None:
    """Stream SOURCE (an audio file, or - for raw PCM on stdin, e.g. from arecord) to the
    service's WS /stream and print each message as one JSON line as it arrives; a dropped
    connection is resumed without missing or repeating a window."""
    if source == "-":
        if rate is None:
            raise click.UsageError("raw PCM on stdin needs --rate")
        pcm: PcmSource = stdin_source(rate, channels, SampleEncoding(encoding))
    else:
        pcm = FileSource(Path(source))
    options: dict[str, Any] = {
        key: value
        for key, value in {
            "model": model,
            "stream_id": stream_id,
            "overlap": overlap,
            "top_k": top_k,
            "lat": lat,
            "lon": lon,
            "week": week if lat is not None else None,
            "index": index_windows or None,
            "include_embedding": False if no_embedding else None,
        }.items()
        if value is not None
    }
    target = url.rstrip("/")
    if target.startswith("http"):
        target = "ws" + target[4:]
    if not target.endswith(STREAM_PATH):
        target += STREAM_PATH

    def show(message: dict[str, Any]) -> None:
        click.echo(json.dumps(message))

    try:
        asyncio.run(
            stream_audio(
                target,
                pcm,
                options,
                api_key=api_key,
                speed=speed or None,
                frame_ms=frame_ms,
                retries=retries,
                on_message=show,
            )
        )
    except SevensenseError as exc:
        _fail(exc)


main.add_command(worker)

if __name__ == "__main__":
    main()
