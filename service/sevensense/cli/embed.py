"""``sevensense embed`` and ``sevensense show``: recordings to embedding files on this
machine, and a look at what such a file holds.

Exit status of ``embed``: 0 every recording embedded; 1 some recordings failed or were
only partly embedded (the rest are in the output, the summary says which); 2 nothing could
be embedded or the command was wrong.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

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
    parse_time,
    plan_request,
    report_failures,
    settings_of,
    window_progress,
)
from sevensense.cli.options import index_options, species_options, transform_options
from sevensense.errors import SevensenseError


@click.command("embed")
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
@click.option(
    "--classifier",
    "classifier_ref",
    default=None,
    help="a custom classifier name[:version]: its classes' scores per window (custom_*)",
)
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
    classifier_ref: str | None,
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
    from sevensense.embeddings.quality import QualityMonitors
    from sevensense.inference.engine import EmbeddingEngine, WindowResult
    from sevensense.inference.recordings import embed_recordings
    from sevensense.outputs.writers import open_writer
    from sevensense.planning.options import RequestOptions

    settings = settings_of(ctx)
    if batch_size is not None:
        settings.inference.max_batch_size = batch_size
    fmt = fmt or ("npz" if out_path.suffix == ".npz" else "parquet")
    try:
        engine = EmbeddingEngine(settings)
        if classifier_ref and (model_ref is None or ":" not in model_ref):
            from sevensense.agile.store import ClassifierStore

            space = ClassifierStore(settings.models_dir).resolve(classifier_ref).manifest.space
            if model_ref in (None, space.model_name):  # it belongs to one model version
                model_ref = f"{space.model_name}:{space.model_version}"
        model = engine.model(model_ref)
        check_species_flags(lat, lon, species_list)
        plan = plan_request(
            engine,
            model,
            RequestOptions(
                overlap=hop_overlap(model, overlap, hop),
                padding=padding,
                energy_threshold=energy_threshold,
                top_k=top_k,
                include_logits=include_logits,
                lat=lat,
                lon=lon,
                week=week,
                sf_thresh=sf_thresh,
                species_file=species_list,
                reduce=reduce_ref,
                project=project,
                curvature=curvature,
                max_norm=max_norm,
                classifier=classifier_ref,
            ),
        )
        species, options, transform, dim = plan.species, plan.options, plan.transform, plan.out_dim
        indexer = None
        if index_name is not None:
            from sevensense.index.ingest import Indexer, space_info
            from sevensense.index.store import open_index

            when = parse_time(recorded_at) if recorded_at else None
            hop_s = (1 - (options.overlap or 0.0)) * plan.window_s
            info = space_info(model.manifest, transform, hop_s)
            indexer = Indexer(open_index(settings, index_name), info, tenant, site, when)
    except SevensenseError as exc:
        fail(exc)
    files = audio_files(paths)
    n_classes = model.manifest.n_classes if include_logits else None
    writer = open_writer(
        out_path, fmt, dim, n_classes, transform.columns(), custom=plan.classifier is not None
    )
    bar = audio_bar(files, quiet, "audio embedded")
    monitors = QualityMonitors(settings.quality)

    def write(result: WindowResult) -> None:
        out = transform.apply_result(monitors.observe_one(result))
        if plan.classifier is not None:
            from sevensense.agile.apply import with_custom

            [out] = with_custom(plan.classifier, [out])
        writer.write(out)
        if indexer is not None:
            indexer.add(out)

    summary = embed_recordings(
        engine, files, write, model=model, options=options, on_window=window_progress(bar)
    )
    bar.close()
    report = summary.to_dict()
    if species is not None:
        report["species_filter"] = species.summary()
    if indexer is not None:
        try:
            indexer.flush()
        except SevensenseError as exc:
            fail(exc)
        finally:
            indexer.index.close()
        report["index"] = {"name": indexer.index.name, "space": indexer.info.key.slug}
        click.echo(
            f"{indexer.added} new of {indexer.seen} windows -> index "
            f"{indexer.index.name}/{indexer.info.key.slug}"
        )
    if not transform.is_identity:
        report["transform"] = transform.describe()
    if plan.classifier is not None:
        report["classifier"] = plan.classifier.ref
    report["quality"] = [q.model_dump(mode="json") for q in monitors.reports()]
    writer.close(report)
    report_failures(summary)
    skipped = sum(len(r.skipped) for r in summary.recordings)
    click.echo(
        f"{summary.windows} windows from {len(files) - len(summary.failed)}/{len(files)} files "
        f"({summary.audio_s:.1f} s audio, {skipped} windows skipped) in {summary.wall_s:.2f} s "
        f"[{summary.model} on {summary.provider}] -> {out_path}{describe_species(species)}"
        + ("" if transform.is_identity else f"; {dim}-d vectors in space {transform.space_key}")
    )
    if summary.windows == 0:
        sys.exit(EXIT_FAILED)
    sys.exit(EXIT_PARTIAL if summary.failed else EXIT_OK)


@click.command("show")
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
