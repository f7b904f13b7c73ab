"""``sevensense label …`` and ``sevensense classifier …``: labels on indexed windows, and
linear classifiers trained on them (issue 26). The index and the trainer load inside the
commands only."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sevensense.cli.common import fail, settings_of
from sevensense.cli.options import stacked
from sevensense.errors import SevensenseError

if TYPE_CHECKING:
    from sevensense.index.base import VectorIndex
    from sevensense.index.records import Scope, SpaceInfo


def _space_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Which index, space and tenant a command works on."""
    options = [
        click.option(
            "--index", "index_name", default=None, help="index name (default: index.name)"
        ),
        click.option(
            "--model",
            "model_ref",
            default=None,
            help="the space's name[:version] (optional: one space)",
        ),
        click.option("--transform", default=None, help="the space's transform key (default full)"),
        click.option("--tenant", default=None, help="this tenant's windows only (default: any)"),
    ]
    return stacked(options, command)


def _open(
    ctx: click.Context, index_name: str | None, model_ref: str | None, transform: str | None
) -> tuple[VectorIndex, SpaceInfo]:
    from sevensense.index.spaces import pick_space
    from sevensense.index.store import open_index

    try:
        index = open_index(settings_of(ctx), index_name)
        return index, pick_space(index, model_ref, transform)
    except SevensenseError as exc:
        fail(exc)


def _scope(tenant: str | None) -> Scope:
    from sevensense.index.records import Scope

    return Scope.of(tenant) if tenant else Scope.everyone()


def _echo(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


@click.group("label")
def label() -> None:
    """Labels on indexed windows (a window id, or a recording and a span), stored with the
    index: in perch-hoplite's own annotations table on the hoplite backend."""


@label.command("add")
@_space_options
@click.option("--window-id", type=click.IntRange(0), multiple=True, help="a window id (repeat)")
@click.option("--recording", "recording_id", default=None, help="label a span of this recording")
@click.option("--start", type=float, default=None, help="span start, seconds")
@click.option("--end", type=float, default=None, help="span end, seconds")
@click.option("--label", "label_name", required=True)
@click.option(
    "--type",
    "label_type",
    type=click.Choice(["positive", "negative", "uncertain"]),
    default="positive",
)
@click.option("--provenance", default="cli", show_default=True)
@click.pass_context
def label_add(
    ctx: click.Context,
    index_name: str | None,
    model_ref: str | None,
    transform: str | None,
    tenant: str | None,
    window_id: tuple[int, ...],
    recording_id: str | None,
    start: float | None,
    end: float | None,
    label_name: str,
    label_type: str,
    provenance: str,
) -> None:
    """Label windows by id (--window-id) or a recording's span (--recording --start --end)."""
    from pydantic import ValidationError

    from sevensense.index.annotations import AnnotationIn

    common = {"label": label_name, "type": label_type, "provenance": provenance}
    try:
        if window_id:
            items = [AnnotationIn.model_validate({"window_id": w, **common}) for w in window_id]
        else:
            items = [
                AnnotationIn.model_validate(
                    {"recording_id": recording_id, "start_s": start, "end_s": end, **common}
                )
            ]
    except ValidationError as exc:
        raise click.UsageError(str(exc.errors()[0]["msg"]).removeprefix("Value error, ")) from exc
    _annotate(ctx, index_name, model_ref, transform, tenant, items)


@label.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_space_options
@click.option("--recording", "recording_id", default=None, help="a Raven table's recording id")
@click.option("--label-column", default=None, help="a Raven table's label column")
@click.option("--provenance", default=None, help="default: the file's name")
@click.pass_context
def label_import(
    ctx: click.Context,
    path: Path,
    index_name: str | None,
    model_ref: str | None,
    transform: str | None,
    tenant: str | None,
    recording_id: str | None,
    label_column: str | None,
    provenance: str | None,
) -> None:
    """Labels from a Raven selection table or a CSV of file,start,end,label[,type]."""
    from sevensense.agile.label_files import read_label_file

    try:
        items = read_label_file(
            path,
            recording=recording_id,
            provenance=provenance or path.name,
            label_column=label_column,
        )
    except SevensenseError as exc:
        fail(exc)
    _annotate(ctx, index_name, model_ref, transform, tenant, items)


def _annotate(
    ctx: click.Context,
    index_name: str | None,
    model_ref: str | None,
    transform: str | None,
    tenant: str | None,
    items: list[Any],
) -> None:
    from sevensense.index.annotations import annotation_store

    index, space = _open(ctx, index_name, model_ref, transform)
    try:
        result = annotation_store(index).annotate(space.key, items, _scope(tenant))
    except SevensenseError as exc:
        fail(exc)
    finally:
        index.close()
    _echo(
        {
            "space": space.key.slug,
            **result.model_dump(mode="json", exclude={"annotations"}),
            "windows": len(result.annotations),
        }
    )


@label.command("list")
@_space_options
@click.option("--label", "label_name", default=None, help="only this label")
@click.pass_context
def label_list(
    ctx: click.Context,
    index_name: str | None,
    model_ref: str | None,
    transform: str | None,
    tenant: str | None,
    label_name: str | None,
) -> None:
    """The labels as JSON, one object per (window, label, provenance)."""
    from sevensense.index.annotations import annotation_store

    index, space = _open(ctx, index_name, model_ref, transform)
    try:
        found = annotation_store(index).annotations(space.key, _scope(tenant), label_name)
    except SevensenseError as exc:
        fail(exc)
    finally:
        index.close()
    _echo([a.model_dump(mode="json") for a in found])


@label.command("delete")
@_space_options
@click.option("--id", "ids", type=int, multiple=True, help="annotation id (repeat)")
@click.option("--label", "label_name", default=None, help="every annotation of this label")
@click.pass_context
def label_delete(
    ctx: click.Context,
    index_name: str | None,
    model_ref: str | None,
    transform: str | None,
    tenant: str | None,
    ids: tuple[int, ...],
    label_name: str | None,
) -> None:
    from sevensense.index.annotations import annotation_store

    if not ids and label_name is None:
        raise click.UsageError("name annotations by --id or --label")
    index, space = _open(ctx, index_name, model_ref, transform)
    try:
        gone = annotation_store(index).delete(
            space.key, _scope(tenant), list(ids) or None, label_name
        )
    except SevensenseError as exc:
        fail(exc)
    finally:
        index.close()
    _echo({"deleted": gone})


@click.group("classifier")
def classifier() -> None:
    """Linear classifiers on one index space's embeddings, trained on its labels; kept in
    the registry beside the models (perch-hoplite JSON, an ONNX head, a manifest)."""


@classifier.command("train")
@_space_options
@click.option("--name", required=True, help="classifier name; each training is a new version")
@click.option("--labels", "classes", default=None, help="comma-separated classes (default: all)")
@click.option("--steps", type=click.IntRange(1), default=None)
@click.option("--learning-rate", type=float, default=None)
@click.option("--weak-neg-weight", type=float, default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_context
def classifier_train(
    ctx: click.Context,
    index_name: str | None,
    model_ref: str | None,
    transform: str | None,
    tenant: str | None,
    name: str,
    classes: str | None,
    steps: int | None,
    learning_rate: float | None,
    weak_neg_weight: float | None,
    seed: int,
) -> None:
    """Train on the labels, report held-out ROC-AUC/AP per class, register the result."""
    from sevensense.agile.store import ClassifierStore
    from sevensense.agile.train import TrainOptions
    from sevensense.agile.workflow import train_classifier

    chosen = {"steps": steps, "learning_rate": learning_rate, "weak_neg_weight": weak_neg_weight}
    options = TrainOptions(seed=seed, **{k: v for k, v in chosen.items() if v is not None})
    index, space = _open(ctx, index_name, model_ref, transform)
    store = ClassifierStore(settings_of(ctx).models_dir)
    wanted = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    try:
        trained = train_classifier(index, space, _scope(tenant), store, name, wanted, options)
    except SevensenseError as exc:
        fail(exc)
    finally:
        index.close()
    _echo(
        {
            "classifier": trained.ref,
            "directory": str(trained.directory),
            **trained.manifest.model_dump(
                mode="json", include={"space", "classes", "sha256", "onnx_sha256", "report"}
            ),
        }
    )


@classifier.command("list")
@click.option("--tenant", default=None, help="those this tenant may use (default: all)")
@click.pass_context
def classifier_list(ctx: click.Context, tenant: str | None) -> None:
    from sevensense.agile.store import ClassifierStore

    store = ClassifierStore(settings_of(ctx).models_dir)
    try:
        found = store.manifests(tenant)
    except SevensenseError as exc:
        fail(exc)
    _echo([m.model_dump(mode="json", exclude={"report"}) for m in found])


@classifier.command("review")
@click.argument("ref")
@_space_options
@click.option("--label", "label_name", required=True, help="the class to review")
@click.option("--mode", type=click.Choice(["top", "margin"]), default="top", show_default=True)
@click.option("-k", "k", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option("--include-labelled", is_flag=True, help="keep windows already labelled")
@click.pass_context
def classifier_review(
    ctx: click.Context,
    ref: str,
    index_name: str | None,
    model_ref: str | None,
    transform: str | None,
    tenant: str | None,
    label_name: str,
    mode: str,
    k: int,
    include_labelled: bool,
) -> None:
    """The windows to label next: highest scores (top) or nearest the boundary (margin)."""
    from sevensense.agile.store import ClassifierStore
    from sevensense.agile.workflow import review

    index, space = _open(ctx, index_name, model_ref, transform)
    try:
        found = ClassifierStore(settings_of(ctx).models_dir).resolve(ref, tenant)
        rows = review(
            index,
            space,
            _scope(tenant),
            found,
            label_name,
            mode,  # type: ignore[arg-type]
            k,
            not include_labelled,
        )
    except SevensenseError as exc:
        fail(exc)
    finally:
        index.close()
    _echo([r.model_dump(mode="json") for r in rows])


@classifier.command("histogram")
@click.argument("ref")
@_space_options
@click.option("--label", "label_name", required=True, help="the class")
@click.option("--bins", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option("--sample", type=click.IntRange(1, 100_000), default=10_000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_context
def classifier_histogram(
    ctx: click.Context,
    ref: str,
    index_name: str | None,
    model_ref: str | None,
    transform: str | None,
    tenant: str | None,
    label_name: str,
    bins: int,
    sample: int,
    seed: int,
) -> None:
    """Scores (0-1) of a seeded random sample of the windows, in equal bins."""
    from sevensense.agile.store import ClassifierStore
    from sevensense.agile.workflow import histogram

    index, space = _open(ctx, index_name, model_ref, transform)
    try:
        found = ClassifierStore(settings_of(ctx).models_dir).resolve(ref, tenant)
        result = histogram(index, space, _scope(tenant), found, label_name, bins, sample, seed)
    except SevensenseError as exc:
        fail(exc)
    finally:
        index.close()
    _echo({"classifier": found.ref, "space": space.key.slug, **result.model_dump(mode="json")})


@classifier.command("apply")
@click.argument("ref")
@_space_options
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--format",
    "formats",
    type=click.Choice(["scores", "raven", "audacity", "csv", "kaleidoscope", "parquet"]),
    multiple=True,
    help="scores (scores.parquet, every window) and/or BirdNET-Analyzer detection files "
    "(repeat; default scores)",
)
@click.option("--min-conf", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True)
@click.option(
    "--density",
    type=click.Choice(["csv", "parquet"]),
    default=None,
    help="also write call density per recording and per site/day",
)
@click.pass_context
def classifier_apply(
    ctx: click.Context,
    ref: str,
    index_name: str | None,
    model_ref: str | None,
    transform: str | None,
    tenant: str | None,
    out_dir: Path,
    formats: tuple[str, ...],
    min_conf: float,
    density: str | None,
) -> None:
    """Score every window of the index space; write scores, detections and call density."""
    from sevensense.agile.bulk import apply_classifier
    from sevensense.agile.store import ClassifierStore

    index, space = _open(ctx, index_name, model_ref, transform)
    try:
        found = ClassifierStore(settings_of(ctx).models_dir).resolve(ref, tenant)
        summary = apply_classifier(
            index,
            space,
            _scope(tenant),
            found,
            out_dir,
            formats or ("scores",),
            min_conf=min_conf,
            density=density,  # type: ignore[arg-type]
        )
    except SevensenseError as exc:
        fail(exc)
    finally:
        index.close()
    _echo(summary.model_dump(mode="json"))
