"""``sevensense models``: the artifacts in the registry, built here, pulled, imported,
quantized and verified, and how a model's classes map onto the verifier's.

Builders, the downloader and the quantizer load onnx and friends, so each subcommand
imports what it runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sevensense.cli.common import EXIT_OK, EXIT_PARTIAL, fail, settings_of
from sevensense.errors import SevensenseError
from sevensense.verification.defaults import DEFAULT_VERIFIER

if TYPE_CHECKING:
    from tqdm import tqdm

    from sevensense.artifacts.manifest import ModelKind
    from sevensense.artifacts.registry import ModelRegistry


@click.group("models")
def models() -> None:
    """List, build, pull, import and verify model artifacts."""


def _registry(ctx: click.Context) -> ModelRegistry:
    from sevensense.artifacts.registry import ModelRegistry

    return ModelRegistry(settings_of(ctx).models_dir)


class _DownloadBar:
    """tqdm fed by the downloader's (done, total) callbacks."""

    def __init__(self) -> None:
        self.bar: tqdm[Any] | None = None

    def __call__(self, done: int, total: int | None) -> None:
        from tqdm import tqdm

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
        fail(exc)


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
        fail(exc)
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
        fail(exc)
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
        fail(exc)
    click.echo(f"ok {artifact.manifest.identity} sha256={artifact.manifest.sha256}")


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
    from sevensense.verification.species_map import species_map_for

    registry = _registry(ctx)
    try:
        primary = registry.resolve(model_ref, default_variant="base")
        verifier = registry.resolve(against, default_variant="base")
        mapping = species_map_for(primary, verifier)
    except SevensenseError as exc:
        fail(exc)
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
