"""The ``sevensense`` command line: one module per command group, registered here on the
root group of :mod:`~sevensense.cli.root`.

Command modules never import this package (nor each other's commands), so registering
them needs no late import; heavy modules load inside the commands that run them, so
``sevensense --help`` stays cheap.
"""

from __future__ import annotations

from sevensense.cli.detect import detect, species
from sevensense.cli.embed import embed, show
from sevensense.cli.index import index_group, search
from sevensense.cli.keys import keys
from sevensense.cli.models import models
from sevensense.cli.quality import check, verify
from sevensense.cli.reduce import reduce
from sevensense.cli.root import main
from sevensense.cli.stream import stream
from sevensense.cli.worker import worker

for command in (
    embed,
    detect,
    species,
    show,
    models,
    reduce,
    keys,
    verify,
    check,
    index_group,
    search,
    stream,
    worker,
):
    main.add_command(command)

__all__ = ["main"]
