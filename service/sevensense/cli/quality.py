"""``sevensense verify`` and ``sevensense check``: how far a model's answers can be
trusted, against BirdNET window by window (ADR-007 §7) and against the Appendix B
checklist that gates a rollout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sevensense.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PARTIAL,
    audio_files,
    fail,
    settings_of,
)
from sevensense.errors import SevensenseError
from sevensense.verification.defaults import DEFAULT_VERIFIER

if TYPE_CHECKING:
    from sevensense.verification.offline import WindowRow


@click.command("verify")
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
    from sevensense.inference.engine import EmbeddingEngine
    from sevensense.verification.offline import verify_recordings
    from sevensense.verification.parquet import VerifyWriter

    settings = settings_of(ctx)
    files = audio_files(paths)
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
        fail(exc)
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


@click.command("check")
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
    from sevensense.inference.engine import EmbeddingEngine
    from sevensense.quality_gate.checklist import run_check
    from sevensense.quality_gate.store import checked

    settings = settings_of(ctx)
    try:
        engine = EmbeddingEngine(settings)
        artifact = engine.registry.resolve(ref, default_variant=settings.inference.model_variant)
        engine.registry.verify(artifact)
        if audio_dir is None:
            result = checked(engine, artifact, rerun=rerun).result
        else:
            result = run_check(engine, str(artifact.manifest.identity), audio_dir)
    except SevensenseError as exc:
        fail(exc)
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
