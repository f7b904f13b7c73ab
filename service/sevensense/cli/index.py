"""``sevensense index`` and ``sevensense search``: similarity-search indexes filled from
embedding files or audio, and the neighbours of a query's windows in them (issue 12).

The backends (hoplite directories, pgvector tables) and the engine load only inside the
commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sevensense.cli.common import (
    audio_files,
    fail,
    hop_overlap,
    parse_time,
    plan_request,
    settings_of,
)
from sevensense.cli.options import index_options, transform_options
from sevensense.errors import (
    IndexNotFoundError,
    RequestError,
    SevensenseError,
    VectorIndexError,
)

if TYPE_CHECKING:
    from sevensense.index.base import VectorIndex
    from sevensense.index.records import SearchFilter
    from sevensense.inference.engine import EmbeddingEngine
    from sevensense.inference.sessions import LoadedModel
    from sevensense.planning.plan import RequestPlan
    from sevensense.settings import Settings


def _open_index(settings: Settings, name: str | None) -> VectorIndex:
    from sevensense.index.store import open_index

    try:
        return open_index(settings, name)
    except SevensenseError as exc:
        fail(exc)


def _search_filter(items: tuple[str, ...]) -> SearchFilter:
    """``recording=PREFIX``, ``site=NAME``, ``from=TIME``, ``to=TIME``."""
    from sevensense.index.records import SearchFilter

    fields: dict[str, Any] = {}
    names = {"recording": "recording_prefix", "site": "site", "from": "time_from", "to": "time_to"}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in names:
            raise click.BadParameter(
                f"{item!r}: use recording=PREFIX, site=NAME, from=TIME or to=TIME",
                param_hint="--filter",
            )
        fields[names[key]] = parse_time(value) if key in ("from", "to") else value
    return SearchFilter(**fields)


@click.group("index")
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
    from sevensense.artifacts.registry import ModelRegistry
    from sevensense.index.ingest import add_parquet

    settings = settings_of(ctx)
    index = _open_index(settings, index_name)
    registry = ModelRegistry(settings.models_dir)
    when = parse_time(recorded_at) if recorded_at else None
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
        fail(exc)
    finally:
        index.close()


@index_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def index_list(ctx: click.Context, as_json: bool) -> None:
    """The named indexes of the configured backend and their spaces."""
    from sevensense.index.records import SpaceInfo
    from sevensense.index.store import index_names, open_index

    settings = settings_of(ctx)
    try:
        names = index_names(settings)
        listing = {}
        for name in names:
            index = open_index(settings, name)
            listing[name] = [s.model_dump(mode="json") for s in index.spaces()]
            index.close()
    except SevensenseError as exc:
        fail(exc)
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
    settings = settings_of(ctx)
    index = _open_index(settings, index_name)
    try:
        stats = index.stats()
    except SevensenseError as exc:
        fail(exc)
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
    from sevensense.index.records import Scope

    settings = settings_of(ctx)
    index = _open_index(settings, index_name)
    try:
        removed = index.delete_recording(
            recording_id, Scope.of(tenant) if tenant else Scope.everyone()
        )
    except SevensenseError as exc:
        fail(exc)
    finally:
        index.close()
    click.echo(f"{removed} windows of {recording_id} deleted from {index.name}")


@index_group.command("compact")
@click.option("--index", "index_name", default=None, help="index name (default: index.name)")
@click.pass_context
def index_compact(ctx: click.Context, index_name: str | None) -> None:
    """Fold recent adds into each space's usearch.index and drop deleted vectors: run it
    before handing a copy of a hoplite directory to perch-hoplite (which reads only that
    file). Adds do it by themselves every index.compact_after vectors."""
    settings = settings_of(ctx)
    index = _open_index(settings, index_name)
    try:
        took = index.compact()
    except SevensenseError as exc:
        fail(exc)
    finally:
        index.close()
    if not took:
        click.echo(f"index {index.name} [{settings.index.backend}]: nothing to compact")
    for slug, seconds in took.items():
        click.echo(f"{index.name}/{slug}: compacted in {seconds:.2f} s")


@index_group.command("migrate")
@click.option(
    "--app-secret",
    required=True,
    help="Secrets Manager id/ARN of the tasks' role: JSON with username and password",
)
@click.pass_context
def index_migrate(ctx: click.Context, app_secret: str) -> None:
    """pgvector, run once with the master user's secret (index.pg_secret): create the
    extension and the least-privilege role the entry and worker tasks connect as (again:
    set its password from the secret)."""
    from sevensense.aws import client
    from sevensense.index.pg_roles import migrate
    from sevensense.index.store import pg_url

    settings = settings_of(ctx)
    try:
        if settings.index.backend != "pgvector":
            raise RequestError("index migrate is for the pgvector backend")
        answer = client("secretsmanager", VectorIndexError).get_secret_value(SecretId=app_secret)
        app = json.loads(answer["SecretString"])
        for line in migrate(pg_url(settings), str(app["username"]), str(app["password"])):
            click.echo(line)
    except SevensenseError as exc:
        fail(exc)
    except (KeyError, ValueError):
        fail(VectorIndexError(f"the app secret {app_secret!r} is not {{username, password}}"))


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
    from sevensense.artifacts.registry import ModelRegistry
    from sevensense.index.ingest import (
        Indexer,
        add_parquet,
        parquet_dim,
        parquet_space,
        parquet_transform_and_info,
        space_info,
    )
    from sevensense.index.records import RecordingRef
    from sevensense.inference.engine import EmbeddingEngine
    from sevensense.inference.recordings import embed_recordings

    settings = settings_of(ctx)
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
            when = parse_time(recorded_at) if recorded_at else None
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
        when = parse_time(recorded_at) if recorded_at else None
        sources += [
            RecordingRef(recording_id=str(p), source=str(p), tenant=tenant, site=site, time=when)
            for p in (audio_files(tuple(audio)) if audio else [])
        ]
        if not sources:
            raise RequestError("nothing to reindex: give Parquet or audio files, or --from-space")
        engine = EmbeddingEngine(settings)
        model = engine.model(model_ref)
        plan = _vectors_plan(
            engine,
            model,
            hop_overlap(model, overlap, hop),
            reduce_ref,
            project,
            curvature,
            max_norm,
        )
        transform, options = plan.transform, plan.options
        info = space_info(model.manifest, transform)
        if from_space == info.key.slug:
            raise RequestError("--from-space is the target space itself; choose the new model")
        index.drop_space(info.key)
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
        fail(exc)
    finally:
        index.close()


@click.command("search")
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
    import numpy as np

    from sevensense.artifacts.registry import ModelRegistry
    from sevensense.index.ingest import (
        parquet_batches,
        parquet_dim,
        parquet_space,
        parquet_transform_and_info,
        space_info,
    )
    from sevensense.index.records import Scope
    from sevensense.inference.engine import EmbeddingEngine

    settings = settings_of(ctx)
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
            plan = _vectors_plan(engine, model, overlap, reduce_ref, project, curvature, max_norm)
            transform, options = plan.transform, plan.options
            info = space_info(model.manifest, transform)
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
        scope = Scope.of(tenant) if tenant else Scope.everyone()
        found = index.search(
            info.key,
            vectors[list(chosen)],
            k,
            scope,
            flt,
            metric or info.metric,  # type: ignore[arg-type]
        )
    except SevensenseError as exc:
        fail(exc)
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


def _vectors_plan(
    engine: EmbeddingEngine,
    model: LoadedModel,
    overlap: float | None,
    reduce_ref: str | None,
    project: str | None,
    curvature: float,
    max_norm: float,
) -> RequestPlan:
    """Vectors only (no top-k), in the space the transform options name."""
    from sevensense.planning.options import RequestOptions

    options = RequestOptions(
        overlap=overlap,
        top_k=0,
        reduce=reduce_ref,
        project=project,
        curvature=curvature,
        max_norm=max_norm,
    )
    return plan_request(engine, model, options)
