"""The command line most benchmarks share: ``--quick`` for a short run, the result printed
as JSON and, with ``--json PATH``, written there too."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def quick_json_main(run: Callable[[bool], Any], doc: str | None, quick_help: str) -> None:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else "")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    text = json.dumps(run(args.quick), indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
