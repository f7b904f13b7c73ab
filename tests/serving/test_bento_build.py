"""`bentoml build` works offline and packs the graph, the real artifacts and a runtime lock
that matches the one the tests ran with."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from sevensense.artifacts.registry import ModelRegistry
from tests.conftest import REPO


def test_serving_requirements_are_current() -> None:
    fresh = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "serving_requirements.py")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert fresh == (REPO / "requirements" / "serving.txt").read_text(), (
        "run: .venv/bin/python scripts/serving_requirements.py > requirements/serving.txt"
    )
    pins = dict(line.split("==") for line in fresh.splitlines() if "==" in line)
    assert "onnxruntime-gpu" in pins and "onnxruntime" not in pins
    assert not {"locust", "moto", "pytest", "schemathesis"} & set(pins)


def test_bento_builds_offline(tmp_path: Path, birdnet_artifact: object) -> None:
    env = {**os.environ, "BENTOML_HOME": str(tmp_path), "BENTOML_DO_NOT_TRACK": "true"}
    bentoml = str(Path(sys.executable).parent / "bentoml")
    subprocess.run(
        [bentoml, "build", "-f", "bentofile.yaml"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    (bento,) = [p for p in (tmp_path / "bentos" / "sevensense").iterdir() if p.name != "latest"]
    meta = yaml.safe_load((bento / "bento.yaml").read_text())
    services = {s["name"]: s for s in meta["services"]}
    assert set(services) == {"Entry", "GpuModel", "CpuModel", "Verifier"}
    assert {d["service"] for d in services["Entry"]["dependencies"]} == {
        "GpuModel",
        "CpuModel",
        "Verifier",
    }
    assert services["Entry"]["config"]["runner_probe"] == {"enabled": False}
    assert services["GpuModel"]["config"]["resources"] == {"gpu": 1}
    for name in ("GpuModel", "CpuModel", "Verifier"):
        assert services[name]["config"]["runner_connection"]["max_requests"] >= 1_000_000
    src = bento / "src"
    registry = ModelRegistry(src / "models")
    registry.verify(registry.resolve("birdnet-v2.4"))  # the packed weights pass the sha256 check
    assert not (src / "models" / "perch-contract").exists()
    assert (src / "service" / "sevensense" / "serving" / "service.py").is_file()
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    # CUDA 13 comes from the wheels in the requirements, not from a CUDA 12 base image.
    assert "FROM python:3.11-slim" in dockerfile and "nvidia/cuda" not in dockerfile
    assert "libsndfile1" in dockerfile and "NVIDIA_DRIVER_CAPABILITIES" in dockerfile
