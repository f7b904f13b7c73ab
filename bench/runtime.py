"""The runtime figures of issue 15 from one command: reduced-precision variants against fp32
(bench/variants.py) and ORT threads under a busy neighbour with ``sevensense embed`` of a
20-minute recording in x real time (bench/threads.py).

    make bench-runtime      # or: .venv/bin/python -m bench.runtime [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench import threads, variants


def run(quick: bool) -> dict[str, Any]:
    start = time.perf_counter()
    result: dict[str, Any] = {"variants": variants.run(quick), "threads": threads.run(quick)}
    result["wall_s"] = round(time.perf_counter() - start, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="fewer windows, rounds, minutes")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    text = json.dumps(run(args.quick), indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
