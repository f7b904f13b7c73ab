"""``sevensense batch submit``: an archive already in S3 onto the batch worker's queue.

S3 events reach the worker for new objects only; this enqueues every audio object under a
prefix (or in an S3 Inventory) that the worker has not done yet. Progress goes to stderr,
the final report (JSON) to stdout; the exit status is 1 when any object failed to enqueue.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import click

from sevensense.cli.common import EXIT_OK, EXIT_PARTIAL, fail, settings_of
from sevensense.errors import SevensenseError

if TYPE_CHECKING:
    from sevensense.archive.submit import SubmitReport

PROGRESS_EVERY_S = 2.0


@click.group("batch")
def batch() -> None:
    """The S3 batch worker's archive commands."""


@batch.command("submit")
@click.argument("source")
@click.option(
    "--inventory",
    metavar="S3_URI",
    default=None,
    help="an S3 Inventory manifest.json (CSV) to read instead of listing the prefix",
)
@click.option(
    "--per-message",
    type=click.IntRange(1, 100),
    default=1,
    show_default=True,
    help="objects per queue message (1 keeps each failure apart in the dead-letter queue)",
)
@click.option("--dry-run", is_flag=True, help="count what would be enqueued; send nothing")
@click.option("--quiet", is_flag=True, help="no progress lines")
@click.pass_context
def submit(
    ctx: click.Context,
    source: str,
    inventory: str | None,
    per_message: int,
    dry_run: bool,
    quiet: bool,
) -> None:
    """Enqueue every audio object under SOURCE (s3://bucket/prefix) not done yet."""
    from sevensense.archive.submit import submit_archive

    settings = settings_of(ctx.find_root())
    last = [0.0]

    def progress(report: SubmitReport) -> None:
        now = time.monotonic()
        if quiet or now - last[0] < PROGRESS_EVERY_S:
            return
        last[0] = now
        click.echo(
            f"{report.listed} listed, {report.enqueued} enqueued, {report.already_done} done "
            f"already, {sum(report.skipped.values())} skipped, {report.failed} failed "
            f"({report.elapsed_s:.0f} s)",
            err=True,
        )

    try:
        report = submit_archive(
            settings,
            source,
            inventory=inventory,
            per_message=per_message,
            dry_run=dry_run,
            on_progress=progress,
        )
    except SevensenseError as exc:
        fail(exc)
    click.echo(report.model_dump_json())
    sys.exit(EXIT_PARTIAL if report.failed else EXIT_OK)
