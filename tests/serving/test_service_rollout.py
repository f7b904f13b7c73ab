"""Canary weights and hot swap: consistent routing by key, changes without a restart,
zero failed requests while a version is swapped in, a corrupt artifact refused.

The Perch-contract versions have random weights, so they fail the Appendix B gate's BirdNET
cross-validation (as they should): these tests, which are about routing, pass ``force``.
``force`` never skips the digest check (the corrupt 1.2.0 is still refused)."""

from __future__ import annotations

import io
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

from sevensense.serving.rollout.resolver import ModelResolver
from sevensense.serving.rollout.weights import FileRolloutStore, choose_version
from tests.conftest import audio, make_settings
from tests.serving.conftest import Service

MODEL = "perch-contract"


def clip() -> bytes:
    data, rate = sf.read(audio("perch_testclip_10s_16k.wav"), dtype="float32")
    buf = io.BytesIO()
    sf.write(buf, data[: 5 * rate], rate, format="WAV")
    return buf.getvalue()


CLIP = clip()


def embed(c: httpx.Client, recording_id: str) -> httpx.Response:
    return c.post(
        "/embed",
        files={"audio": ("clip.wav", CLIP, "audio/wav")},
        data={"model": MODEL, "recording_id": recording_id, "top_k": "0"},
    )


def test_canary_split_is_within_two_percent_and_sticky(
    serving_models: Path, tmp_path: Path
) -> None:
    settings = make_settings()
    settings.models_dir = serving_models
    store = FileRolloutStore(tmp_path / "rollout.json")
    gateway = ModelResolver(settings, store)
    store.set_weights(MODEL, {"1.0.0": 90, "1.1.0": 10})
    keys = [f"recording-{i}" for i in range(10_000)]
    first = {k: gateway.resolve(MODEL, k).manifest.version for k in keys}
    share = Counter(first.values())["1.1.0"] / len(keys)
    assert abs(share - 0.10) <= 0.02, share
    assert all(gateway.resolve(MODEL, k).manifest.version == first[k] for k in keys[:500])
    # A weight change is seen by the same gateway (no restart) and moves only canary-bound keys.
    store.set_weights(MODEL, {"1.0.0": 80, "1.1.0": 20})
    second = {k: gateway.resolve(MODEL, k).manifest.version for k in keys}
    assert abs(Counter(second.values())["1.1.0"] / len(keys) - 0.20) <= 0.02
    assert all(second[k] == "1.1.0" for k in keys if first[k] == "1.1.0")
    # A pinned version ignores the split.
    assert gateway.resolve(f"{MODEL}:1.0.0", keys[0]).manifest.version == "1.0.0"


def test_canary_over_http(server: Service) -> None:
    with server.client("admin") as admin:
        response = admin.put(
            f"/admin/models/{MODEL}/traffic",
            json={"weights": {"1.0.0": 90, "1.1.0": 10}, "force": True},
        )
        assert response.status_code == 200, response.text
        assert response.json()["traffic"] == {"1.0.0": 90.0, "1.1.0": 10.0}
        assert {p["model"]["version"] for p in response.json()["prepared"]["cpu"]} == {
            "1.0.0",
            "1.1.0",
        }
        detail = admin.get(f"/models/{MODEL}").json()
    assert detail["traffic"] == {"1.0.0": 90.0, "1.1.0": 10.0}
    assert {v["version"]: v["weight"] for v in detail["versions"]}["1.2.0"] == 0.0
    state = FileRolloutStore(Path(server.env["SEVENSENSE_SERVING__STATE_DIR"]) / "rollout.json")
    expected_state = state.load()[MODEL]
    pid = server.proc.pid if server.proc else None
    with server.client() as c:
        for i in range(24):
            rid = f"rec-{i}"
            versions = {embed(c, rid).headers["X-Model-Version"] for _ in range(2)}
            assert versions == {choose_version(expected_state, rid, MODEL)}
        with server.client("admin") as admin:
            admin.put(
                f"/admin/models/{MODEL}/traffic",
                json={"weights": {"1.0.0": 0, "1.1.0": 1}, "force": True},
            )
        assert {embed(c, f"rec-{i}").headers["X-Model-Version"] for i in range(8)} == {"1.1.0"}
    assert server.proc is not None and server.proc.pid == pid and server.proc.poll() is None


def test_hot_swap_under_load_and_corrupt_artifact_refused(server: Service) -> None:
    with server.client("admin") as admin:
        assert admin.post(
            f"/admin/models/{MODEL}/activate", json={"version": "1.0.0", "force": True}
        ).is_success
    log: list[tuple[float, float, int, str, np.ndarray | None]] = []
    stop = threading.Event()

    def client_loop(n: int) -> None:
        with server.client() as c:
            i = 0
            while not stop.is_set():
                sent = time.monotonic()
                r = embed(c, f"load-{n}-{i}")
                emb = np.array(r.json()["windows"][0]["embedding"]) if r.is_success else None
                log.append(
                    (
                        sent,
                        time.monotonic(),
                        r.status_code,
                        r.headers.get("X-Model-Version", ""),
                        emb,
                    )
                )
                i += 1

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    with server.client("admin") as admin:
        swap = admin.post(
            f"/admin/models/{MODEL}/activate", json={"version": "1.1.0", "force": True}
        )
        swapped_at = time.monotonic()
        time.sleep(2.0)
        refused = admin.post(
            f"/admin/models/{MODEL}/activate", json={"version": "1.2.0", "force": True}
        )
        time.sleep(1.5)
        after = admin.get(f"/models/{MODEL}").json()
    stop.set()
    for t in threads:
        t.join()

    assert swap.status_code == 200, swap.text
    (gate,) = swap.json()["quality"]  # random weights: forced past cross-validation only
    assert gate["forced"] is True and gate["failed"] == ["birdnet_agreement"]
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "activation_failed" and "sha256" in error["message"]
    assert after["active_version"] == "1.1.0" and after["traffic"] == {"1.1.0": 100.0}
    statuses = Counter(status for _, _, status, _, _ in log)
    assert statuses == {200: len(log)}, statuses
    before = [v for sent, done, _, v, _ in log if done < swapped_at - 0.5]
    later = [v for sent, _, _, v, _ in log if sent > swapped_at]
    assert before and set(before) == {"1.0.0"}
    assert later and set(later) == {"1.1.0"}
    old = next(e for *_, v, e in log if v == "1.0.0")
    new = next(e for *_, v, e in log if v == "1.1.0")
    assert old is not None and new is not None and np.abs(old - new).max() > 1e-3
