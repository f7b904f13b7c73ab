"""ORT threads are sized to the CPUs the process may really use (affinity, cgroup quota), and
the sessions created get the chosen options; ``auto`` spinning stays off beside busy
neighbours."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sevensense.inference.sessions import create_session
from sevensense.inference.spinning import busy_cpus, spinning
from sevensense.settings import (
    InferenceSettings,
    cgroup_cpu_quota,
    cgroup_quota_here,
    process_cpus,
    usable_cpus,
)
from tests.conftest import REPO


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        ({"cpu_max": "max 100000\n"}, None),
        ({"cpu_max": "150000 100000\n"}, 1.5),
        ({"cpu_max": "200000 100000"}, 2.0),
        ({"cpu_max": "50000 100000"}, 0.5),
        ({"cpu_max": "garbage"}, None),
        ({"cfs_quota_us": "-1\n", "cfs_period_us": "100000\n"}, None),
        ({"cfs_quota_us": "25000\n", "cfs_period_us": "100000\n"}, 0.25),
        ({"cfs_quota_us": "400000", "cfs_period_us": "100000"}, 4.0),
        ({"cfs_quota_us": "x", "cfs_period_us": "100000"}, None),
        ({}, None),
    ],
)
def test_cgroup_cpu_quota(texts: dict[str, str], expected: float | None) -> None:
    assert cgroup_cpu_quota(**texts) == expected


@pytest.mark.parametrize(
    ("affinity", "quota", "expected"),
    [(2, None, 2), (8, 1.5, 2), (8, 0.5, 1), (2, 4.0, 2), (16, 4.0, 4), (0, None, 1)],
)
def test_usable_cpus(affinity: int, quota: float | None, expected: int) -> None:
    assert usable_cpus(affinity, quota) == expected


def test_quota_read_from_a_cgroup_tree(tmp_path: Path) -> None:
    assert cgroup_quota_here(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_quota_here(tmp_path) == 1.5
    v1 = tmp_path / "cpu,cpuacct"
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_quota_here(tmp_path) == 0.5  # the tightest wins


def test_a_parent_groups_quota_binds(tmp_path: Path) -> None:
    """cgroup v2: an ECS task's quota sits on the task's group, above the container's."""
    own = "0::/ecs/task-1/container-a\n"
    container = tmp_path / "ecs" / "task-1" / "container-a"
    container.mkdir(parents=True)
    (container / "cpu.max").write_text("max 100000\n")
    assert cgroup_quota_here(tmp_path, own) is None
    (tmp_path / "ecs" / "task-1" / "cpu.max").write_text("150000 100000\n")
    assert cgroup_quota_here(tmp_path, own) == 1.5
    (container / "cpu.max").write_text("100000 100000\n")
    assert cgroup_quota_here(tmp_path, own) == 1.0
    assert cgroup_quota_here(tmp_path, "1:name=systemd:/\n") is None  # v1-only line


def test_auto_threads_follow_the_affinity_mask() -> None:
    """Pinned to one core, the process sizes its ORT pool to one thread (os.cpu_count()
    still says the machine's count)."""
    code = (
        "import os; from sevensense.settings import InferenceSettings, process_cpus; "
        "print(os.cpu_count(), process_cpus(), InferenceSettings().resolved_intra_threads())"
    )
    out = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    ).stdout.split()
    assert out[1:] == ["1", "1"]
    assert int(out[0]) == os.cpu_count()
    assert process_cpus() == min(len(os.sched_getaffinity(0)), process_cpus())


def test_session_gets_the_chosen_options(birdnet_artifact) -> None:  # type: ignore[no-untyped-def]
    defaults = InferenceSettings(providers=["cpu"], allow_spinning=False)
    assert InferenceSettings().allow_spinning == "auto"
    session, used, _ = create_session(birdnet_artifact.model_path, defaults)
    opts = session.get_session_options()  # type: ignore[union-attr]
    assert used == ["CPUExecutionProvider"]
    assert opts.intra_op_num_threads == min(process_cpus(), 4)
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    pinned = InferenceSettings(providers=["cpu"], intra_threads=1, allow_spinning=True)
    session, _, _ = create_session(birdnet_artifact.model_path, pinned)
    opts = session.get_session_options()  # type: ignore[union-attr]
    assert opts.intra_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert opts.get_session_config_entry("session.intra_op.spin_duration_us") == "200"


def test_auto_spinning_stays_off_beside_busy_neighbours(birdnet_artifact) -> None:  # type: ignore[no-untyped-def]
    cpus = sorted(os.sched_getaffinity(0))
    loops = [
        subprocess.Popen(["taskset", "-c", str(c), sys.executable, "-c", "while True: pass"])
        for c in cpus
    ]
    try:
        time.sleep(0.3)
        busy = busy_cpus(0.2)
        assert busy is not None and busy > 0.8 * len(cpus), busy
        auto = InferenceSettings(providers=["cpu"], allow_spinning="auto")
        assert spinning(auto) is False
        session, _, _ = create_session(birdnet_artifact.model_path, auto)
        opts = session.get_session_options()  # type: ignore[union-attr]
        assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
    assert spinning(InferenceSettings(allow_spinning=True)) is True
