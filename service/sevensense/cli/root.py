"""The ``sevensense`` group itself: the options every command shares (profile, models
directory, verbosity) and the settings it loads for them into ``ctx.obj``.

Command modules do not import it: the group finds each command by name in
:data:`COMMANDS` and imports its module only when that command runs or ``--help`` lists
it, so ``sevensense embed`` never loads the index, the stream client or the worker, and
the settings (pydantic) load only once a command runs.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Any

import click

from sevensense.cli.common import fail
from sevensense.errors import SevensenseError
from sevensense.profiles import PROFILE_NAMES

# Command name -> "module:attribute", in the order ``--help`` lists them.
COMMANDS: dict[str, str] = {
    "embed": "sevensense.cli.embed:embed",
    "detect": "sevensense.cli.detect:detect",
    "species": "sevensense.cli.detect:species",
    "show": "sevensense.cli.embed:show",
    "models": "sevensense.cli.models:models",
    "reduce": "sevensense.cli.reduce:reduce",
    "keys": "sevensense.cli.keys:keys",
    "verify": "sevensense.cli.quality:verify",
    "check": "sevensense.cli.quality:check",
    "index": "sevensense.cli.index:index_group",
    "search": "sevensense.cli.index:search",
    "label": "sevensense.cli.agile:label",
    "classifier": "sevensense.cli.agile:classifier",
    "stream": "sevensense.cli.stream:stream",
    "worker": "sevensense.cli.worker:worker",
    "batch": "sevensense.cli.batch:batch",
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*COMMANDS, *(n for n in super().list_commands(ctx) if n not in COMMANDS)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, attr = target.split(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup)
@click.option(
    "--profile", type=str, default=None, help=f"one of {', '.join(PROFILE_NAMES)} or a TOML path"
)
@click.option("--models-dir", type=click.Path(path_type=Path), default=None, help="registry root")
@click.option("-v", "--verbose", count=True, help="-v info, -vv debug logging")
@click.pass_context
def main(ctx: click.Context, profile: str | None, models_dir: Path | None, verbose: int) -> None:
    """7sense: bioacoustic embeddings and species scores from real recordings."""
    # pydantic looks for plugins in every installed distribution's entry points when it
    # builds its first model: 0.05-0.15 s of each command's start here, for none installed
    # (issue 25). An empty PYDANTIC_DISABLE_PLUGINS in the environment loads them.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    from sevensense.settings import load_settings

    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        overrides: dict[str, Any] = {"models_dir": models_dir} if models_dir else {}
        ctx.obj = {"settings": load_settings(profile, **overrides)}
    except SevensenseError as exc:
        fail(exc)
