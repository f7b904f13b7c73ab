"""``sevensense reduce``: fit PCA reducers on a model's embeddings (ADR-007 §3.2) and list
them; ``embed``, ``search`` and ``index`` apply one with ``--reduce``.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from sevensense.cli.common import audio_files, fail, hop_overlap, settings_of
from sevensense.errors import SevensenseError


@click.group("reduce")
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
    import numpy as np

    from sevensense.embeddings.fitting import (
        split_inputs,
        vectors_from_audio,
        vectors_from_parquet,
    )
    from sevensense.embeddings.pca import fit_pca
    from sevensense.embeddings.reducers import ReducerStore
    from sevensense.embeddings.transform import artifact_sha256
    from sevensense.inference.engine import EmbeddingEngine, EmbedOptions

    settings = settings_of(ctx)
    try:
        engine = EmbeddingEngine(settings)
        model = engine.model(model_ref)
        manifest = model.manifest
        parquet, audio = split_inputs(inputs)
        blocks = [vectors_from_parquet(p, manifest) for p in parquet]
        if audio:
            options = EmbedOptions(overlap=hop_overlap(model, overlap, hop), top_k=0)
            blocks.append(vectors_from_audio(engine, audio_files(tuple(audio)), model, options))
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
        fail(exc)
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
    from sevensense.embeddings.reducers import ReducerStore

    try:
        manifests = ReducerStore(settings_of(ctx).models_dir).manifests()
    except SevensenseError as exc:
        fail(exc)
    if as_json:
        click.echo(json.dumps([m.model_dump(mode="json") for m in manifests], indent=2))
        return
    for m in manifests:
        click.echo(
            f"{m.ref:<32} {m.model_name}:{m.model_version}  {m.in_dim}->{m.out_dim}  "
            f"{m.n_windows} windows  variance kept {m.explained_variance:.4f}"
        )
