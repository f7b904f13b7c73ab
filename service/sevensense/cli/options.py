"""Option stacks several commands take, written once so they read and behave the same
everywhere: where a recording was made (species), how vectors are reduced or projected
(transform), and whose index entries are (index).

The defaults shown in ``--help`` are the constants of the modules that own them, so they
are imported here, at decoration time, from light modules that load no numpy, ONNX
Runtime or pyarrow (a command starts in a fraction of a second).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from sevensense.embeddings.choices import DEFAULT_MAX_NORM, PROJECTIONS
from sevensense.index.tenants import OPERATOR_TENANT
from sevensense.inference.range_defaults import ALL_YEAR, DEFAULT_THRESHOLD

F = TypeVar("F", bound=Callable[..., Any])


def stacked(options: Sequence[Callable[[F], F]], command: F) -> F:
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
    return stacked(options, command)


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
    return stacked(options, command)


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
    return stacked(options, command)
