"""SIGKILL during continuous adds, at least 20 times per backend (tests/index/crash_adder.py
in a subprocess, killed at a random moment after it started adding): every time the index
opens, every window is either fully present (its row, and its vector, bit for bit as
stored) or absent, whole adds at a time, and the next run of the same adds (idempotent key)
completes it. Hoplite's kills also land inside compactions (every 4 adds, on a background
thread while adds go on: every third kill waits for an add that left one running);
pgvector's first add is a bulk load that drops and rebuilds the HNSW graph in its
transaction."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from sevensense.errors import IndexNotFoundError
from sevensense.index.hoplite import HopliteIndex
from sevensense.index.hoplite_vectors import read_state
from sevensense.index.pgvector import REGISTRY
from sevensense.index.records import Scope
from tests.conftest import REPO
from tests.index import crash_adder as plan

KILLS = 20


def _run(
    backend: str,
    where: str,
    start: int = 0,
    kill: tuple[int, float] | None = None,
    in_compaction: bool = False,
) -> tuple[int, list[str]]:
    """One run of the adder from add ``start``; ``kill`` = (n, s): SIGKILL ``s`` seconds
    after it reports add ``n - 1`` committed (after ``ready`` for n = 0), or at its end;
    ``in_compaction``: ``s`` seconds after it reports a background compaction running."""
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'service'}:{REPO}"}
    if backend == "hoplite-worker":
        backend, env["CRASH_BUILD_IN_WORKER"] = "hoplite", "1"
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.index.crash_adder", backend, where, str(start)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert child.stdout is not None
    lines = [child.stdout.readline().strip()]
    assert lines == ["ready"], lines
    if kill is not None:
        after, delay = kill
        until = "compacting" if in_compaction else str(after - 1)
        while (in_compaction or after > start) and lines[-1] not in (until, "done", ""):
            lines.append(child.stdout.readline().strip())
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
    out, _ = child.communicate(timeout=120)
    return child.returncode, lines + out.split()


def _next_log(space: Path) -> bool:
    """A log file of a generation after the committed one: a compaction was swapping."""
    if not (space / "hoplite.sqlite").is_file():
        return False
    with contextlib.closing(sqlite3.connect(space / "hoplite.sqlite")) as db:
        state = read_state(db)
    return (space / f"vectors.{state.generation + 1}.log").exists()


def _hoplite_entries(root: Path) -> dict[int, np.ndarray]:
    """window number -> its stored vector, read as a search would."""
    index = HopliteIndex(root, plan.NAME, plan.SETTINGS)
    try:
        try:
            handle = index._handle(plan.KEY)
        except IndexNotFoundError:  # killed before the space was made: nothing there
            return {}
        with handle.lock:
            handle.vectors.refresh(handle.db)
            rows = handle.db.execute(
                "SELECT w.id, r.filename, w.start_ms FROM windows w "
                "JOIN recordings r ON w.recording_id = r.id"
            ).fetchall()
            got = handle.vectors.get(np.asarray([r[0] for r in rows], dtype=np.uint64))
        # a search answers from the same store (the HNSW file and the log together)
        if rows:
            q = got[len(rows) // 2]
            assert index.search(plan.KEY, q, 1, Scope.everyone())[0][0].score > 0.999
    finally:
        index.close()
    return {int(r[1][1:]) * 100 + r[2] // 1000: got[i] for i, r in enumerate(rows)}


def _pg_entries(url: str) -> dict[int, np.ndarray]:
    with psycopg.connect(url) as conn:
        register_vector(conn)
        found = conn.execute(
            f"SELECT table_name FROM {REGISTRY} WHERE index_name = %s", (plan.NAME,)
        ).fetchone()
        if found is None:
            return {}
        table = found[0]
        hnsw = conn.execute(
            "SELECT 1 FROM pg_indexes WHERE tablename = %s AND indexdef LIKE %s",
            (table, "%hnsw%"),
        ).fetchone()
        assert hnsw is not None, "the HNSW index is gone after a kill"
        rows = conn.execute(f"SELECT recording_id, start_ms, embedding FROM {table}").fetchall()
    return {int(r[0][1:]) * 100 + r[1] // 1000: np.asarray(r[2].to_numpy()) for r in rows}


def _check(entries: dict[int, np.ndarray], first: int, stored: Any) -> int:
    """Whole adds, in order: returns how many adds are present."""
    batches = plan.batches(first)
    want = plan.vectors(batches[-1].stop)
    present = 0
    for windows in batches:
        have = [i in entries for i in windows]
        assert all(have) or not any(have), f"add {windows} is partly present"
        if not any(have):
            break
        present += 1
        for i in windows:
            assert np.array_equal(entries[i], stored(want[i])), f"window {i}: wrong vector"
    assert len(entries) == sum(len(b) for b in batches[:present]), "windows out of order"
    return present


@pytest.mark.parametrize("backend", ["hoplite", "hoplite-worker", "pgvector"])
def test_sigkill_during_adds(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """hoplite-worker: the builds run in the build worker, which a kill orphans (it ends
    when its stdin closes, after its build): what it leaves must not matter either."""
    rng = random.Random(24)
    hoplite = backend.startswith("hoplite")
    if hoplite:
        where = str(tmp_path)
        first, longest = 0, 0.03

        def entries() -> dict[int, np.ndarray]:
            return _hoplite_entries(tmp_path)

        def stored(v: np.ndarray) -> np.ndarray:
            return v.astype(np.float16).astype(np.float32)

        def reset() -> None:
            shutil.rmtree(tmp_path / plan.NAME)
    else:
        where = request.getfixturevalue("pg_url")
        first, longest = plan.FIRST, 1.5

        def entries() -> dict[int, np.ndarray]:
            return _pg_entries(where)

        def stored(v: np.ndarray) -> np.ndarray:
            return v.astype(np.float16)  # halfvec

        def reset() -> None:
            index = plan.open_index("pgvector", where)
            index.drop_space(plan.KEY)
            index.close()

    total = len(plan.batches(first))
    kills = 0
    partial = 0
    present = 0
    mid_compaction = 0
    for attempt in range(3 * KILLS):
        # a random add to die in, at a random moment in it; each run first repeats the
        # last add that committed (nothing new: the idempotent key)
        target = rng.randrange(present, total)
        start = max(0, present - 1)
        delay = rng.uniform(0.0, longest if target == 0 else 0.03)
        in_compaction = hoplite and attempt % 3 == 2
        code, lines = _run(backend, where, start, (target, delay), in_compaction)
        if hoplite:  # what a kill inside a compaction leaves behind
            space = tmp_path / plan.NAME / plan.KEY.slug
            mid_compaction += any(space.glob(".usearch.index.*.tmp*")) or _next_log(space)
        present = _check(entries(), first, stored)
        if code == -signal.SIGKILL:
            kills += 1
            partial += 0 < present < total
            if kills == KILLS:
                break
        else:
            assert code == 0 and lines[-1] == "done"
            assert present == total
        if present == total:  # complete: start again, so that kills land inside adds
            reset()
            present = 0
    assert kills == KILLS
    assert partial >= KILLS // 2, "too few kills landed between the first and the last add"
    if hoplite:
        assert mid_compaction >= 1, "no kill landed inside a compaction"
    code, lines = _run(backend, where)  # all the same adds again complete the index
    assert code == 0 and lines[-1] == "done"
    assert _check(entries(), first, stored) == total
