"""The production topology: the entry reaches model services by URL (JSON over HTTP, as
between ECS services). Here the CPU service runs on its own and the GPU URL points at a
port nobody listens on, so the GPU path is absent, not merely unready."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sevensense.inference.engine import EmbeddingEngine, EmbedOptions
from sevensense.serving.auth import generate_key
from tests.conftest import audio
from tests.serving.conftest import KEYS, Service, free_port, service_env


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory, serving_models: Path) -> Iterator[Service]:
    state = tmp_path_factory.mktemp("remote-state")
    keys = {k: generate_key() for k in KEYS}
    cpu = Service(
        free_port(),
        service_env(serving_models, state, keys),
        state / "cpu.log",
        keys,
        target="sevensense.serving.service:CpuModel",
    )
    cpu.start()
    entry = Service(
        free_port(),
        service_env(
            serving_models,
            state,
            keys,
            SEVENSENSE_SERVING__CPU_URL=cpu.url,
            SEVENSENSE_SERVING__GPU_URL=f"http://127.0.0.1:{free_port()}",
        ),
        state / "entry.log",
        keys,
    )
    try:
        entry.start()
        yield entry
    finally:
        entry.stop()
        cpu.stop()


def test_gpu_absent_requests_succeed_on_remote_cpu(
    remote: Service, engine: EmbeddingEngine
) -> None:
    path = audio("xc563936_soundscape_72s_48k.mp3")
    with remote.client() as c:
        response = c.post("/embed", files={"audio": ("x.mp3", path.read_bytes(), "audio/mpeg")})
        assert c.get("/readyz").status_code == 200
        status = c.get("/status").json()
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["route"] == "cpu" and body["fallback"] is True
    assert body["providers"] == ["CPUExecutionProvider"]
    served = np.array([w["embedding"] for w in body["windows"]], dtype=np.float32)
    direct = np.stack([r.embedding for r in engine.embed_file(path, options=EmbedOptions())])
    assert served.shape == direct.shape == (24, 1024)
    assert np.abs(served - direct).max() < 1e-5
    assert status["paths"]["gpu"]["ready"] is False
    assert "unavailable" in status["paths"]["gpu"]["reason"]
    assert status["paths"]["cpu"]["ready"] is True
