"""Whether ORT's pool threads spin: chosen from how busy this process's CPUs are when a
session is created.

A spinning pool is 5–10 % faster on idle cores (a sleeping pool thread must be woken at
every operator) but loses up to 1.7x when a neighbour shares a core, because the parallel
loop waits for the preempted thread while the others burn the CPU (docs/performance.md).
``auto`` spins only when the CPUs were idle over a short sample, and the spin is bounded
(``spin_duration_us``) so that a neighbour arriving later costs little.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from sevensense.settings import InferenceSettings

PROC_STAT = Path("/proc/stat")
# Less than this many CPUs' worth of work by others counts as idle.
IDLE_BELOW_CPUS = 0.5


def _cpu_ticks(cpus: set[int]) -> tuple[int, int] | None:
    """(busy, total) jiffies summed over ``cpus``; None where /proc/stat is absent."""
    try:
        text = PROC_STAT.read_text()
    except OSError:
        return None
    busy = total = 0
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        fields = [int(x) for x in rest.split()]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        busy += sum(fields[:8]) - idle
        total += sum(fields[:8])
    return busy, total


def busy_cpus(interval_s: float) -> float | None:
    """CPUs' worth of work done on this process's CPUs over ``interval_s`` (by other
    processes, as the caller is asleep meanwhile); None where it cannot be measured."""
    try:
        cpus = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    before = _cpu_ticks(cpus)
    time.sleep(interval_s)
    after = _cpu_ticks(cpus)
    if before is None or after is None or after[1] == before[1]:
        return None
    share = (after[0] - before[0]) / (after[1] - before[1])
    return share * len(cpus)


def spinning(settings: InferenceSettings) -> bool:
    """The pool's spinning for a session created now."""
    if settings.allow_spinning != "auto":
        return settings.allow_spinning
    busy = busy_cpus(settings.spin_probe_ms / 1e3)
    return busy is not None and busy < IDLE_BELOW_CPUS
