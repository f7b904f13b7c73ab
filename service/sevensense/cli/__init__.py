"""The ``sevensense`` command line: one module per command group, found by name by the
root group of :mod:`~sevensense.cli.root` (``COMMANDS``) and imported only when used.

Command modules never import this package (nor each other's commands); each imports at
module level only click and light modules of constants, and loads the heavy ones (numpy,
ONNX Runtime, pyarrow, the settings) inside the command that runs them, so
``sevensense --help`` and the start of every command stay cheap (a test holds it).
"""

from __future__ import annotations

from sevensense.cli.root import main

__all__ = ["main"]
