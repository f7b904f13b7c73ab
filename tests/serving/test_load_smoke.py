"""The load benchmark's own check: its Locust user and step function against the real
service, briefly. In a subprocess because importing Locust monkey-patches the interpreter
with gevent, which must not leak into the rest of the pytest session."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from load_tests.stats import latency_stats
from tests.conftest import REPO
from tests.serving.conftest import Service


def test_latency_stats_are_ordered_percentiles() -> None:
    stats = latency_stats([float(ms) for ms in range(1, 101)])
    assert stats["p50_ms"] == pytest.approx(50.5)
    assert stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"] <= stats["max_ms"] == 100.0
    with pytest.raises(ValueError):
        latency_stats([])


def test_two_users_for_three_seconds(server: Service, tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    command = [sys.executable, "-m", "load_tests.run", "--url", server.url]
    command += ["--key", server.keys["partner"], "--users", "2", "--seconds", "3"]
    command += ["--warmup", "1", "--no-engine", "--json", str(out)]
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (step,) = json.loads(out.read_text())["steps"]
    assert step["users"] == 2 and step["requests"] > 0
    assert step["failures"] == {} and step["user_errors"] == 0, step["failure_messages"]
    assert step["ok"] == step["requests"]
    assert 0 < step["p50_ms"] <= step["p99_ms"]
    assert step["cpu_path"]["windows"] > 0 and step["cpu_path"]["batch_mean"] >= 1.0
