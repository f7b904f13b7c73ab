"""The production topology: the entry reaches model services by URL (JSON over HTTP, as
between ECS services). Here the CPU service runs on its own and the GPU URL points at a
port nobody listens on, so the GPU path is absent, not merely unready."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from sevensense.inference.engine import EmbeddingEngine, EmbedOptions
from sevensense.serving.access.keys import generate_key
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
            SEVENSENSE_SERVING__MAX_INFLIGHT_REQUESTS="2",
            # The Verifier is down too (closed port): verify=true must still answer 200.
            SEVENSENSE_VERIFICATION__ENABLE_BIRDNET="true",
            SEVENSENSE_VERIFICATION__URL=f"http://127.0.0.1:{free_port()}",
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


def test_verifier_down_answers_200_with_verification_unavailable(remote: Service) -> None:
    data = audio("labelled/common_yellowthroat.mp3").read_bytes()
    form = {"model": "perch-contract:1.0.0"}
    with remote.client() as c:
        plain = c.post("/embed", files={"audio": ("y.mp3", data, "audio/mpeg")}, data=form)
        started = time.perf_counter()
        checked = c.post(
            "/embed", files={"audio": ("y.mp3", data, "audio/mpeg")}, data={**form, "verify": "1"}
        )
        elapsed = time.perf_counter() - started
        detail = c.get("/readyz", params={"detail": 1})
    assert plain.status_code == checked.status_code == 200, checked.text
    body = checked.json()
    assert body["verification"]["available"] is False
    assert body["verification"]["reason"].startswith("verifier_unavailable")
    assert [w["embedding"] for w in body["windows"]] == [
        w["embedding"] for w in plain.json()["windows"]
    ]
    assert all(w["verification"]["reason"] == "verifier_unavailable" for w in body["windows"])
    assert elapsed < 5.0  # a dead verifier fails fast, it does not hold the request
    assert detail.status_code == 200  # readiness never depends on the verifier
    assert detail.json()["verifier"]["ready"] is False


def test_overload_is_a_fast_503_with_retry_after(remote: Service) -> None:
    data = audio("soundscape_birdnet_120s_48k.flac").read_bytes()

    def send(_: int) -> tuple[int, float, str | None]:
        started = time.perf_counter()
        with remote.client() as c:
            r = c.post("/embed", files={"audio": ("s.flac", data, "audio/flac")})
        return r.status_code, time.perf_counter() - started, r.headers.get("Retry-After")

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(send, range(8)))
    refused = [r for r in results if r[0] == 503]
    assert {r[0] for r in results} == {200, 503}, results
    assert len([r for r in results if r[0] == 200]) >= 2
    assert all(seconds < 5 and retry and int(retry) >= 1 for _, seconds, retry in refused)
    with remote.client() as c:
        assert c.get("/readyz").status_code == 200
