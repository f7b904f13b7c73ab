"""The Appendix B rollout gate and the quality monitor over HTTP, on the real server.

A broken version (the Perch contract, its embedding collapsed onto two dimensions; see
tests/broken_models.py) is refused with 409 ``quality_gate_failed`` for activation and for
canary weight while clients keep embedding with zero failures; ``force`` lets it through
and is recorded with the admin key's id. ``GET /quality`` and the Prometheus gauges match a
numpy reference computed from the raw norms the responses themselves carry.
"""

from __future__ import annotations

import io
import re
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from sevensense.artifacts.registry import Artifact, ModelRegistry
from tests.broken_models import NAME, build_gate_model
from tests.conftest import audio
from tests.serving.conftest import Service


def _clip() -> bytes:
    data, rate = sf.read(audio("perch_testclip_10s_16k.wav"), dtype="float32")
    buf = io.BytesIO()
    sf.write(buf, data[: 5 * rate], rate, format="WAV")
    return buf.getvalue()


CLIP = _clip()


@pytest.fixture(scope="module")
def gate_versions(serving_models: Path, birdnet_artifact: Artifact) -> tuple[Artifact, Artifact]:
    registry = ModelRegistry(serving_models)
    good = build_gate_model(registry, birdnet_artifact, "1.0.0", "none")
    bad = build_gate_model(registry, birdnet_artifact, "2.0.0", "collapsed")
    return good, bad


def embed(c: httpx.Client, recording_id: str, model: str = NAME) -> httpx.Response:
    return c.post(
        "/embed",
        files={"audio": ("clip.wav", CLIP, "audio/wav")},
        data={"model": model, "recording_id": recording_id, "top_k": "0"},
    )


def test_gate_refuses_a_broken_version_under_load_then_force_is_recorded(
    server: Service, gate_versions: tuple[Artifact, Artifact]
) -> None:
    with server.client("admin") as admin:
        first = admin.post(f"/admin/models/{NAME}/activate", json={"version": "1.0.0"})
    assert first.status_code == 200, first.text
    (gate,) = first.json()["quality"]
    assert gate["passed"] is True and gate["forced"] is False

    log: list[tuple[int, str, list[float]]] = []
    stop = threading.Event()

    def client_loop(n: int) -> None:
        with server.client() as c:
            i = 0
            while not stop.is_set():
                r = embed(c, f"gate-{n}-{i}")
                norms = (
                    [w["quality"]["raw_norm"] for w in r.json()["windows"]] if r.is_success else []
                )
                log.append((r.status_code, r.headers.get("X-Model-Version", ""), norms))
                i += 1

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        with server.client("admin") as admin:
            refused = admin.post(f"/admin/models/{NAME}/activate", json={"version": "2.0.0"})
            canary = admin.put(
                f"/admin/models/{NAME}/traffic", json={"weights": {"1.0.0": 90, "2.0.0": 10}}
            )
            time.sleep(1.0)
            during = admin.get(f"/models/{NAME}").json()
    finally:
        stop.set()
        for t in threads:
            t.join()

    for answer in (refused, canary):
        assert answer.status_code == 409, answer.text
        error = answer.json()["error"]
        assert error["code"] == "quality_gate_failed"
        assert [i["id"] for i in error["details"]["failed"]] == ["isotropy"]
        assert "isotropy" in error["message"]
    assert Counter(status for status, _, _ in log) == {200: len(log)} and len(log) > 3
    assert {version for _, version, _ in log} == {"1.0.0"}
    assert during["active_version"] == "1.0.0" and during["traffic"] == {"1.0.0": 100.0}
    stored = during["quality_checks"][f"{NAME}:2.0.0:base"]
    assert stored["result"]["passed"] is False and stored["overrides"] == []
    assert during["quality_checks"][f"{NAME}:1.0.0:base"]["result"]["passed"] is True

    # The monitor of this gateway process saw exactly the windows these clients received.
    with server.client("reader") as reader:
        quality = reader.get("/quality")
        metrics_text = httpx.get(f"{server.url}/metrics").text
    assert quality.status_code == 200, quality.text
    report = next(
        m for m in quality.json()["models"] if (m["model"], m["version"]) == (NAME, "1.0.0")
    )
    norms = np.array([n for _, _, ns in log for n in ns])
    assert report["seen"] == norms.size and report["raw_norm"]["count"] == norms.size
    assert report["raw_norm"]["mean"] == pytest.approx(norms.mean(), rel=1e-9)
    assert report["raw_norm"]["std"] == pytest.approx(norms.std(), rel=1e-6)
    pct = report["raw_norm"]["percentiles"]
    assert [pct[f"p{q}"] for q in (5, 25, 50, 75, 95)] == pytest.approx(
        np.percentile(norms, [5, 25, 50, 75, 95]), rel=1e-9
    )
    gauge = re.search(
        r'sevensense_embedding_quality\{[^}]*model="gate-birdnet"[^}]*stat="raw_norm_mean"'
        r'[^}]*version="1\.0\.0"[^}]*\} ([0-9.e+-]+)',
        metrics_text,
    )
    assert gauge is not None, [ln for ln in metrics_text.splitlines() if "quality" in ln][:5]
    assert float(gauge.group(1)) == pytest.approx(report["raw_norm"]["mean"], rel=1e-6)

    with server.client("admin") as admin:
        forced = admin.post(
            f"/admin/models/{NAME}/activate", json={"version": "2.0.0", "force": True}
        )
        after = admin.get(f"/models/{NAME}").json()
    assert forced.status_code == 200, forced.text
    (gate,) = forced.json()["quality"]
    assert (
        gate["forced"] is True and gate["forced_by"] == "admin" and gate["failed"] == ["isotropy"]
    )
    assert after["active_version"] == "2.0.0"
    (override,) = after["quality_checks"][f"{NAME}:2.0.0:base"]["overrides"]
    assert override["by"] == "admin" and override["action"] == "activate" and override["at"]
    with server.client() as c:
        assert embed(c, "after-force").headers["X-Model-Version"] == "2.0.0"


def test_quality_needs_the_read_scope(server: Service) -> None:
    with server.client(None) as anonymous:
        assert anonymous.get("/quality").status_code == 401
