"""Benchmarks measure real threads: only the locust drivers may load gevent.

``load_tests/run.py`` imports locust, and locust monkey-patches the standard library with
gevent on import: threads become greenlets, ``time.sleep`` yields to them, a blocking call
that gevent does not patch (``flock``) blocks them all. ``load_tests/streams.py`` used to take
a constant from it, so the index ingest bench's background compactions ran as greenlets: an
add seemed to wait for a whole compaction, and a run could deadlock on ``compaction.lock``
(docs/index-at-scale.md). Every other benchmark and load-test module must import without it.
"""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

LOCUST_DRIVERS = {"load_tests.run", "load_tests.locustfile", "load_tests.verification"}

PROBE = """
import importlib, pkgutil, sys
drivers = set(sys.argv[1].split(","))
for package in ("bench", "load_tests"):
    for found in pkgutil.iter_modules([package]):
        name = f"{package}.{found.name}"
        if name in drivers:
            continue
        importlib.import_module(name)
        if "gevent" in sys.modules:
            print(name)
            break
import threading
print(threading._start_new_thread.__module__)
"""


def test_only_the_locust_drivers_load_gevent() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(sorted(LOCUST_DRIVERS))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert done.stdout.split() == ["_thread"], done.stdout  # no module, and real threads


def test_the_probe_sees_a_driver() -> None:
    """The check above can fail: importing a locust driver does patch threading."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import load_tests.run, threading; print(threading._start_new_thread.__module__)",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert done.stdout.split() == ["gevent.thread"]
