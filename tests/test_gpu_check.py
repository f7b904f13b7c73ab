"""`make gpu-check` on a machine where CUDA cannot run: exit 2 at once, one JSON document
with the reason (no driver here), nothing heavy loaded before."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pynvml

from tests.conftest import REPO


def test_gpu_check_exits_2_with_the_reason_without_a_gpu() -> None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:  # a GPU host: the check itself is the test (make gpu-check)
        pynvml.nvmlShutdown()
        return
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check"],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 2, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] is False
    assert result["reason"].startswith("no NVIDIA driver found by NVML")
    assert result["driver"]["driver_version"] is None and result["driver"]["ok"] is False
    assert result["driver"]["required_cuda"] == "13.0"
    assert "parity" not in result and "batch_curve" not in result
    assert elapsed < 15, f"took {elapsed:.1f} s: it must refuse before loading anything heavy"
