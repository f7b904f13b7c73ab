"""The ``sevensense`` group itself: the options every command shares (profile, models
directory, verbosity) and the settings it loads for them into ``ctx.obj``.

Command modules do not import it: the package's ``__init__`` adds their commands to it,
so registering them all needs no cycle and no late import.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from sevensense.cli.common import fail
from sevensense.errors import SevensenseError
from sevensense.settings import PROFILE_NAMES, load_settings


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
        fail(exc)
