"""Agile modeling over the real loopback server (its own state, so its own index): the
partner indexes hand claps and a dawn chorus with ``/embed index=true``, labels windows
with ``POST /annotations``, trains with ``POST /classifiers``, reviews candidates; every
refusal has its status and JSON error."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from sevensense.agile.store import ClassifierStore
from sevensense.client.stream import FileSource, stream_audio
from sevensense.serving.access.keys import generate_key
from tests.conftest import AUDIO, audio
from tests.serving.conftest import KEYS, Service, free_port, service_env

CLAP = audio("perch_clap_21s_16k.wav")
SOUNDSCAPE = audio("soundscape_birdnet_120s_48k.flac")
SPACE = {"model": "birdnet-v2.4:2.4.0"}


@pytest.fixture(scope="module")
def agile_server(
    tmp_path_factory: pytest.TempPathFactory, serving_models: Path
) -> Iterator[Service]:
    state = tmp_path_factory.mktemp("agile-state")
    models = tmp_path_factory.mktemp("agile-models")
    for entry in serving_models.iterdir():  # the same models; classifiers of its own
        (models / entry.name).symlink_to(entry)
    keys = {k: generate_key() for k in KEYS}
    env = service_env(models, state, keys, SEVENSENSE_INDEX__AUDIO_ROOTS=f'["{AUDIO}"]')
    service = Service(free_port(), env, state / "server.log", keys)
    service.start()
    for key, path, rid in (
        ("partner", CLAP, str(CLAP)),
        ("partner", SOUNDSCAPE, "site7/soundscape"),
        ("admin", CLAP, "admin/clap"),
    ):
        with service.client(key) as c, path.open("rb") as f:
            r = c.post(
                "/embed",
                files={"audio": (path.name, f.read(), "application/octet-stream")},
                data={
                    "index": "true",
                    "recording_id": rid,
                    "overlap": "0",
                    "top_k": "0",
                    "energy_threshold": "0",
                },
            )
            assert r.status_code == 200, r.text
            if rid == str(CLAP):
                claps = [w["start_s"] for w in r.json()["windows"] if any(w["embedding"])]
    yield service, claps
    service.stop()


def call(service: Service, key: str, method: str, path: str, **kw: Any) -> httpx.Response:
    with service.client(key) as c:
        return c.request(method, path, **kw)


def spans(rid: str, starts: tuple[float, ...], label: str) -> list[dict[str, Any]]:
    return [
        {"recording_id": rid, "start_s": s, "end_s": s + 3.0, "label": label, "provenance": "t"}
        for s in starts
    ]


def test_annotate_train_review(agile_server: tuple[Service, list[float]]) -> None:
    s, claps = agile_server
    assert len(claps) >= 3
    items = spans(str(CLAP), tuple(claps[:-1]), "clap") + spans(
        "site7/soundscape", (0.0, 15.0, 30.0, 45.0, 60.0, 75.0), "chorus"
    )
    r = call(s, "partner", "POST", "/annotations", json={**SPACE, "annotations": items})
    assert r.status_code == 200, r.text
    n = len(claps) - 1 + 6
    assert (r.json()["added"], r.json()["unchanged"]) == (n, 0)
    again = call(s, "partner", "POST", "/annotations", json={**SPACE, "annotations": items})
    assert (again.json()["added"], again.json()["unchanged"]) == (0, n)
    listed = call(s, "partner", "GET", "/annotations", params={**SPACE, "label": "clap"})
    assert [a["start_s"] for a in listed.json()["annotations"]] == claps[:-1]
    # search by an indexed window: its own window first
    first = listed.json()["annotations"][0]
    r = call(
        s, "partner", "POST", "/search", data={**SPACE, "window_id": first["window_id"], "k": 3}
    )
    assert r.status_code == 200, r.text
    top = r.json()["queries"][0]["neighbours"][0]
    assert (top["recording_id"], top["start_s"]) == (first["recording_id"], first["start_s"])
    # the admin's own window; the partner cannot label it (404, as if it did not exist)
    mine = call(
        s,
        "admin",
        "POST",
        "/annotations",
        json={**SPACE, "annotations": spans("admin/clap", (0.0,), "x")},
    )
    admin_window = mine.json()["annotations"][0]["window_id"]
    stolen = {"window_id": admin_window, "label": "clap"}
    r = call(s, "partner", "POST", "/annotations", json={**SPACE, "annotations": [stolen]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "window_not_found", r.text
    r = call(s, "partner", "POST", "/search", data={**SPACE, "window_id": admin_window})
    assert r.status_code == 404 and r.json()["error"]["code"] == "window_not_found", r.text
    r = call(s, "reader", "POST", "/annotations", json={**SPACE, "annotations": items})
    assert r.status_code == 403

    r = call(s, "partner", "POST", "/classifiers", json={**SPACE, "name": "claps"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["classifier"] == "claps:1"
    report = body["manifest"]["report"]
    assert report["classes"] == ["chorus", "clap"] and report["macro_roc_auc"] >= 0.99
    assert body["manifest"]["space"]["model_version"] == "2.4.0"
    review = call(
        s, "partner", "GET", "/classifiers/claps/review", params={**SPACE, "label": "clap", "k": 1}
    )
    assert review.status_code == 200, review.text
    assert {(w["recording_id"], w["start_s"]) for w in review.json()["windows"]} == {
        (str(CLAP), start) for start in claps[-1:]
    }
    # the score histogram of a seeded sample of the partner's windows
    params = {**SPACE, "label": "clap", "bins": 5, "sample": 4, "seed": 1}
    hist = call(s, "partner", "GET", "/classifiers/claps:1/histogram", params=params)
    assert hist.status_code == 200, hist.text
    h = hist.json()
    assert (h["classifier"], h["sampled"], sum(h["counts"]), len(h["edges"])) == (
        "claps:1",
        4,
        4,
        6,
    )
    assert h["windows"] > 4 and call(s, "partner", "GET", hist.url).json()["counts"] == h["counts"]
    r = call(s, "partner", "GET", "/classifiers/claps/histogram", params={**params, "bins": 0})
    assert r.status_code == 422
    r = call(s, "reader", "GET", "/classifiers/claps/histogram", params=params)
    assert r.status_code == 404 and r.json()["error"]["code"] == "classifier_not_found"
    # the candidate's links: its audio (a file under the roots) and its spectrogram
    links = review.json()["windows"][0]["links"]
    wav = call(s, "partner", "GET", links["audio"])
    assert wav.status_code == 200 and wav.headers["content-type"] == "audio/wav"
    samples, rate = sf.read(io.BytesIO(wav.content))
    assert rate == 16000 and len(samples) == 3 * rate
    png = call(s, "partner", "GET", links["spectrogram"])
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert call(s, "admin", "GET", links["audio"]).status_code == 200
    r = call(s, "reader", "GET", links["audio"])  # another tenant: no such window
    assert r.status_code == 404 and r.json()["error"]["code"] == "window_not_found"
    listed_chorus = call(s, "partner", "GET", "/annotations", params={**SPACE, "label": "chorus"})
    far = listed_chorus.json()["annotations"][0]["window_id"]
    r = call(s, "partner", "GET", f"/windows/{far}/audio", params=SPACE)  # an upload: not kept
    assert r.status_code == 404 and r.json()["error"]["code"] == "audio_unreachable", r.text
    assert call(s, "admin", "GET", "/classifiers").json()["classifiers"][0]["owner"] == "partner"
    # applied: /embed with classifier= scores every window with the head
    with CLAP.open("rb") as f:
        audio_part = {"audio": (CLAP.name, f.read(), "audio/wav")}
    r = call(
        s, "partner", "POST", "/embed", files=audio_part, data={"classifier": "claps", "top_k": "0"}
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["classifier"] == "claps:1"
    head = ClassifierStore(Path(s.env["SEVENSENSE_MODELS_DIR"])).resolve("claps").head
    for w in answer["windows"]:
        assert [c["label"] for c in w["custom"]] == ["chorus", "clap"]
        want = 1 / (1 + np.exp(-head(np.asarray([w["embedding"]], np.float32))[0]))
        assert np.allclose([c["score"] for c in w["custom"]], want, atol=1e-5)
    # ... scored inside the CPU model service's batch, not by the gateway
    with s.client(None) as c:
        text = c.get("/metrics").text
    ran = re.search(
        r'sevensense_head_windows_total\{[^}]*classifier="claps:1"[^}]*outcome="ok"[^}]*\} (\S+)',
        text,
    )
    assert ran and float(ran.group(1)) >= len(answer["windows"]), text[:2000]
    # /detect: the classifier's classes over min_conf are detections beside BirdNET's
    r = call(
        s,
        "partner",
        "POST",
        "/detect",
        files=audio_part,
        data={"classifier": "claps", "min_conf": "0.5"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["classifier"] == "claps:1"
    claps_found = {d["start_s"] for d in r.json()["detections"] if d["label"] == "clap"}
    want_claps = {w["start_s"] for w in answer["windows"] if w["custom"][1]["score"] >= 0.5}
    assert claps_found == want_claps and claps_found
    raven = call(
        s,
        "partner",
        "POST",
        "/detect",
        files=audio_part,
        data={"classifier": "claps", "min_conf": "0.5", "format": "raven"},
    )
    assert raven.status_code == 200 and "\tclap\tclap\t" in raven.text, raven.text[:400]
    # a live stream with the classifier: the same scores per window as /embed's
    run = asyncio.run(
        stream_audio(
            s.url.replace("http://", "ws://") + "/stream",
            FileSource(CLAP),
            {"classifier": "claps", "top_k": 0},
            api_key=s.keys["partner"],
            speed=None,
            frame_ms=250.0,
        )
    )
    streamed = sorted(run.windows.values(), key=lambda w: w["start_s"])
    assert len(streamed) == len(answer["windows"])
    for live, whole in zip(streamed, answer["windows"], strict=True):
        assert [c["label"] for c in live["custom"]] == ["chorus", "clap"]
        assert np.allclose(
            [c["score"] for c in live["custom"]], [c["score"] for c in whole["custom"]], atol=1e-4
        )
    r = call(
        s,
        "partner",
        "POST",
        "/embed",
        files=audio_part,
        data={"classifier": "claps", "model": "perch-contract:1.0.0"},
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "classifier_space_mismatch", r.text
    # refusals
    r = call(
        s,
        "partner",
        "POST",
        "/classifiers",
        json={**SPACE, "name": "x", "options": {"min_positives": n - 5}},
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "too_few_examples"
    assert r.json()["error"]["details"] == {"label": "clap", "positives": n - 6, "needed": n - 5}
    r = call(s, "partner", "POST", "/classifiers", json={**SPACE, "name": "x", "labels": ["clap"]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "one_class_label_set"
    r = call(s, "partner", "GET", "/classifiers/nope/review", params={**SPACE, "label": "clap"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "classifier_not_found"
    r = call(s, "partner", "DELETE", "/annotations", params={**SPACE, "label": "chorus"})
    assert r.status_code == 200 and r.json()["deleted"] == 6
