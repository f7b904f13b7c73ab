"""Issue 4 acceptance on real servers: the CPU model service runs on its own (the ECS
topology) and is really killed and restarted; the deferred path goes through the embedded
queue, a service restart and a real ``sevensense worker`` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sevensense.agile.store import ClassifierStore
from sevensense.queues.sqlite import SqliteQueue
from sevensense.serving.access.keys import generate_key
from tests.agile.heads import save_head
from tests.conftest import REPO, audio
from tests.serving.conftest import KEYS, Service, free_port, service_env

CLIP = "birdnet_sample_3s_48k.wav"  # one BirdNET window: one model call per request


def embed(service: Service, name: str, key: str = "partner") -> Any:
    with service.client(key) as c:
        return c.post("/embed", files={"audio": (name, audio(name).read_bytes(), "audio/wav")})


def detail(service: Service) -> dict[str, Any]:
    with service.client(None) as c:
        return c.get("/readyz", params={"detail": "1"}).json()  # type: ignore[no-any-return]


def metric(service: Service, name: str, **labels: str) -> float:
    with service.client(None) as c:
        text = c.get("/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(scope="module")
def split(
    tmp_path_factory: pytest.TempPathFactory, serving_models: Path
) -> Iterator[dict[str, Service]]:
    """Entry → CPU model service by URL; no GPU path; a breaker that opens after 3
    failures and half-opens after 3 s; quantized then cache as the fallbacks."""
    state = tmp_path_factory.mktemp("split-state")
    keys = {k: generate_key() for k in KEYS}
    common = service_env(serving_models, state, keys)
    # Its own BentoML home: a restarting service clears the Prometheus directory in its home.
    cpu_env = {**common, "BENTOML_HOME": str(state / "bentoml-cpu")}
    cpu = Service(
        free_port(), cpu_env, state / "cpu.log", keys, target="sevensense.serving.service:CpuModel"
    )
    cpu.start()
    entry = Service(
        free_port(),
        {
            **common,
            "SEVENSENSE_SERVING__CPU_URL": cpu.url,
            "SEVENSENSE_SERVING__GPU_ENABLED": "false",
            "SEVENSENSE_SERVING__PROBE_INTERVAL_S": "600",
            "SEVENSENSE_FALLBACK__STRATEGIES": '["cpu","quantized_model","cached_embedding"]',
            "SEVENSENSE_FALLBACK__BREAKER__FAILURE_THRESHOLD": "3",
            "SEVENSENSE_FALLBACK__BREAKER__RECOVERY_TIMEOUT_S": "3",
            "SEVENSENSE_FALLBACK__BREAKER__SUCCESS_THRESHOLD": "2",
        },
        state / "entry.log",
        keys,
    )
    try:
        entry.start()
        yield {"cpu": cpu, "entry": entry}
    finally:
        entry.stop()
        cpu.stop()


def test_breaker_opens_falls_back_and_closes_after_recovery(split: dict[str, Service]) -> None:
    entry, cpu = split["entry"], split["cpu"]
    healthy = embed(entry, CLIP)
    assert healthy.status_code == 200, healthy.text
    assert healthy.json()["windows"][0]["strategy"] == "cpu"
    assert healthy.json()["degraded"] is False
    assert detail(entry)["paths"]["cpu"]["breaker"]["state"] == "closed"

    cpu.stop()  # the model service really dies: connection refused from now on
    for i in range(3):
        r = embed(entry, CLIP)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["windows"][0]["strategy"] == "quantized", body["windows"][0]
        assert body["degraded"] is True and body["strategies"] == {"quantized": 1}
        assert r.headers["X-Degraded"] == "quantized"
        want = "open" if i == 2 else "closed"
        assert detail(entry)["paths"]["cpu"]["breaker"]["state"] == want
    state = detail(entry)
    assert state["ready"] is True and state["model_paths_ready"] is False
    assert state["paths"]["cpu"]["breaker"]["last_error"].startswith("unavailable")
    assert metric(entry, "sevensense_circuit_state", path="cpu") == 1.0
    skipped = metric(entry, "sevensense_path_fallbacks_total", reason="circuit_open")
    assert embed(entry, CLIP).json()["windows"][0]["strategy"] == "quantized"
    assert metric(entry, "sevensense_path_fallbacks_total", reason="circuit_open") == skipped + 1

    cpu.start()  # back on the same port
    deadline = time.monotonic() + 10
    while detail(entry)["paths"]["cpu"]["breaker"]["state"] != "half_open":
        assert time.monotonic() < deadline, detail(entry)
        time.sleep(0.2)
    probe = embed(entry, CLIP).json()
    assert probe["windows"][0]["strategy"] == "cpu"  # the half-open probe was a real request
    assert detail(entry)["paths"]["cpu"]["breaker"]["state"] == "half_open"  # 1 of 2
    assert embed(entry, CLIP).json()["windows"][0]["strategy"] == "cpu"
    assert detail(entry)["paths"]["cpu"]["breaker"]["state"] == "closed"
    moves = {
        (a, b): metric(entry, "sevensense_circuit_transitions_total", from_state=a, to_state=b)
        for a, b in (("closed", "open"), ("open", "half_open"), ("half_open", "closed"))
    }
    with entry.client(None) as c:
        lines = [x for x in c.get("/metrics").text.splitlines() if "circuit" in x]
    assert all(v == 1.0 for v in moves.values()), (moves, lines)
    assert metric(entry, "sevensense_fallback_windows_total", strategy="quantized") == 4.0


def test_quantized_answers_are_close_to_the_model_and_cached_ones_exact(
    split: dict[str, Service],
) -> None:
    entry, cpu = split["entry"], split["cpu"]
    name = "perch_testclip_10s_16k.flac"
    full = embed(entry, name).json()
    assert {w["strategy"] for w in full["windows"]} == {"cpu"}
    cpu.stop()
    try:
        degraded = embed(entry, name).json()
    finally:
        cpu.start()
    # The chain lists quantized before the cache, so seen windows are still quantized.
    assert {w["strategy"] for w in degraded["windows"]} == {"quantized"}
    for a, b in zip(full["windows"], degraded["windows"], strict=True):
        x, y = np.array(a["embedding"]), np.array(b["embedding"])
        assert float(x @ y) > 0.9
        assert b["quality"]["valid"] is True


# --- deferred requests --------------------------------------------------------------------


def drain(service: Service) -> None:
    """A real worker (this checkout's code) takes every queued job once; its profile runs
    BirdNET in process for verify=true."""
    env = {
        **service.env,
        "PATH": str(Path(sys.executable).parent),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        "SEVENSENSE_VERIFICATION__ENABLE_BIRDNET": "true",
    }
    worker = subprocess.run(
        [
            str(Path(sys.executable).parent / "sevensense"),
            "worker",
            "--queues",
            "deferred",
            "--once",
        ],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert worker.returncode == 0, worker.stdout + worker.stderr


@pytest.fixture(scope="module")
def deferring(tmp_path_factory: pytest.TempPathFactory, serving_models: Path) -> Iterator[Service]:
    """The field profile's chain (deferred only) with its one model path dead."""
    state = tmp_path_factory.mktemp("deferring-state")
    keys = {k: generate_key() for k in KEYS}
    env = {
        **service_env(serving_models, state, keys),
        "SEVENSENSE_SERVING__CPU_URL": f"http://127.0.0.1:{free_port()}",
        "SEVENSENSE_SERVING__GPU_ENABLED": "false",
        "SEVENSENSE_FALLBACK__STRATEGIES": '["deferred_queue"]',
    }
    service = Service(free_port(), env, state / "entry.log", keys)
    service.start()
    service.state = state  # type: ignore[attr-defined]
    try:
        yield service
    finally:
        service.stop()


def test_deferred_end_to_end_survives_restart_and_equals_the_sync_answer(
    deferring: Service, server: Service
) -> None:
    names = ["soundscape_birdnet_120s_48k.flac", "perch_testclip_10s_16k.mp3", CLIP]
    jobs = {}
    for name in names:
        r = embed(deferring, name)
        assert r.status_code == 202, r.text
        body = r.json()
        assert r.headers["Location"] == f"/jobs/{body['job_id']}" == body["status_url"]
        assert body["status"] == "queued" and "no model path" in body["reason"]
        jobs[name] = body["job_id"]
    state: Path = deferring.state  # type: ignore[attr-defined]

    deferring.stop()  # nothing is lost across a restart of the service
    queue = SqliteQueue(state / "queue.sqlite3", "deferred")
    assert queue.depth().visible == 3
    deferring.start()
    with deferring.client() as c:
        for job_id in jobs.values():
            record = c.get(f"/jobs/{job_id}").json()
            assert record["status"] == "queued" and record["result"] is None
        assert c.get(f"/jobs/{'0' * 32}").status_code == 404
        assert c.get("/jobs/..%2Fetc").status_code == 404
    with deferring.client("reader") as c:  # someone else's job is invisible, not forbidden
        assert c.get(f"/jobs/{jobs[CLIP]}").status_code == 404

    drain(deferring)
    assert queue.depth().visible == 0 and queue.depth().in_flight == 0

    for name, job_id in jobs.items():
        with deferring.client() as c:
            record = c.get(f"/jobs/{job_id}").json()
        assert record["status"] == "done", record
        deferred = record["result"]
        assert {w["strategy"] for w in deferred["windows"]} == {"worker"}
        sync = embed(server, name).json()
        assert len(deferred["windows"]) == len(sync["windows"]) == record["windows"]
        a = np.array([w["embedding"] for w in deferred["windows"]])
        b = np.array([w["embedding"] for w in sync["windows"]])
        assert np.abs(a - b).max() < 1e-5, name
        assert [w["top_k"][0]["label"] for w in deferred["windows"]] == [
            w["top_k"][0]["label"] for w in sync["windows"]
        ]
    assert not any((state / "deferred" / "payloads").iterdir())  # payloads cleaned up
    with open(state / "deferred" / "jobs" / f"{jobs[CLIP]}.json") as f:
        assert json.load(f)["owner"] == "partner"


def post(service: Service, route: str, name: str, **form: str) -> Any:
    with service.client() as c:
        files = {"audio": (name, audio(name).read_bytes(), "application/octet-stream")}
        return c.post(route, files=files, data=form)


def raven_rows(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.strip().splitlines()]


def test_deferred_detect_and_verify_answer_as_the_live_routes(
    deferring: Service, server: Service
) -> None:
    """Issue 22 item 7: a deferred /detect stores detections (JSON or the BirdNET file it
    asked for), and a deferred verify=true is verified, as the live routes answer."""
    soundscape, clip = "soundscape_birdnet_120s_48k.flac", "labelled/common_yellowthroat.mp3"
    asks: dict[str, tuple[str, str, dict[str, str]]] = {
        "detect": ("/detect", soundscape, {"verify": "true", "min_conf": "0.1"}),
        "raven": ("/detect", soundscape, {"format": "raven"}),
        "verify": ("/embed", clip, {"verify": "true", "model": "perch-contract:1.0.0"}),
    }
    jobs = {}
    for what, (route, name, form) in asks.items():
        r = post(deferring, route, name, **form)
        assert r.status_code == 202, r.text
        jobs[what] = r.json()["job_id"]
    drain(deferring)
    done = {}
    with deferring.client() as c:
        for what, job_id in jobs.items():
            done[what] = c.get(f"/jobs/{job_id}").json()
            assert done[what]["status"] == "done", done[what]
    live = {what: post(server, route, name, **form) for what, (route, name, form) in asks.items()}

    deferred, sync = done["detect"]["result"], live["detect"].json()
    assert done["detect"]["result_media_type"] == "application/json"
    assert deferred["windows"] == sync["windows"] == done["detect"]["windows"] == 40
    got, want = deferred["detections"], sync["detections"]
    assert len(got) == len(want) > 0
    for a, b in zip(got, want, strict=True):
        assert (a["label"], a["start_s"], a["end_s"]) == (b["label"], b["start_s"], b["end_s"])
        assert abs(a["confidence"] - b["confidence"]) < 2e-4
    # BirdNET verified by itself: trivially, on both paths
    assert {k: v for k, v in deferred["verification"].items() if v is not None} == sync[
        "verification"
    ]
    assert deferred["verification"]["trivial"] is True

    text = done["raven"]["result_text"]
    assert done["raven"]["result"] is None
    assert done["raven"]["result_media_type"] == live["raven"].headers["content-type"]
    rows, expected = raven_rows(text), raven_rows(live["raven"].text)
    assert rows[0] == expected[0] and len(rows) == len(expected) > 1
    conf = expected[0].index("Confidence")
    for a, b in zip(rows[1:], expected[1:], strict=True):
        assert a[:conf] + a[conf + 1 :] == b[:conf] + b[conf + 1 :]
        assert abs(float(a[conf]) - float(b[conf])) <= 2e-4

    deferred, sync = done["verify"]["result"], live["verify"].json()
    v, w = deferred["verification"], sync["verification"]
    assert v["available"] and v["verifier"] == w["verifier"] == "birdnet-v2.4:2.4.0:base"
    assert v["summary"]["windows"] == len(deferred["windows"]) == len(sync["windows"])
    assert v["summary"]["counted"] == w["summary"]["counted"] >= 1
    assert abs(v["summary"]["mean"] - w["summary"]["mean"]) < 1e-6
    assert [x["verification"]["agreement"] for x in deferred["windows"]] == [
        x["verification"]["agreement"] for x in sync["windows"]
    ]
    assert all(x.get("logits") is None for x in deferred["windows"])  # not asked for


def test_deferred_embed_with_a_classifier_is_queued_and_scored_by_the_worker(
    deferring: Service,
) -> None:
    """Issue 26 item 3: ``classifier=`` travels with the deferred job (pinned to the version
    the gateway resolved, with the key's tenant) and the worker scores every window."""
    store = ClassifierStore(Path(deferring.env["SEVENSENSE_MODELS_DIR"]))
    classifier = save_head(store, "deferred-calls", ("a", "b"), 5, owner="partner")
    r = post(deferring, "/embed", CLIP, classifier="deferred-calls", top_k="0")
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    drain(deferring)
    with deferring.client() as c:
        record = c.get(f"/jobs/{job_id}").json()
    assert record["status"] == "done", record
    answer = record["result"]
    assert answer["classifier"] == classifier.ref and answer["windows"]
    for w in answer["windows"]:
        want = 1 / (1 + np.exp(-classifier.head(np.asarray([w["embedding"]], np.float32))[0]))
        assert [c["label"] for c in w["custom"]] == ["a", "b"]
        assert np.allclose([c["score"] for c in w["custom"]], want, atol=1e-5)
