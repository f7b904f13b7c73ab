"""The runtime figures of issue 15 from one command: reduced-precision variants against fp32
(bench/variants.py) and ORT threads under a busy neighbour with ``sevensense embed`` of a
20-minute recording in x real time (bench/threads.py).

    make bench-runtime      # or: .venv/bin/python -m bench.runtime [--quick] [--json out.json]
"""

from __future__ import annotations

import time
from typing import Any

from bench import threads, variants
from bench.report import quick_json_main


def run(quick: bool) -> dict[str, Any]:
    start = time.perf_counter()
    result: dict[str, Any] = {"variants": variants.run(quick), "threads": threads.run(quick)}
    result["wall_s"] = round(time.perf_counter() - start, 1)
    return result


def main() -> None:
    quick_json_main(run, __doc__, "fewer windows, rounds, minutes")


if __name__ == "__main__":
    main()
