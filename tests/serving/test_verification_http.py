"""POST /embed with verify=true against the real service graph, whose Verifier service runs
the real BirdNET v2.4 (no mock): the int8 variant agrees, the random Perch-contract model
does not, and the answers equal the offline runner's; JSON and Arrow; short audio, silence,
BirdNET itself. The verifier-down case is in test_service_remote.py (that server's
verifier URL points at a closed port); shadow sampling in test_verification_shadow.py."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pyarrow as pa
import soundfile as sf

from sevensense.inference.engine import EmbeddingEngine
from sevensense.verification.offline import WindowRow, verify_recordings
from tests.conftest import audio
from tests.serving.conftest import Service, samples

YELLOWTHROAT = audio("labelled/common_yellowthroat.mp3")


def post(service: Service, data: bytes, **form: object) -> Any:
    with service.client() as c:
        return c.post(
            "/embed",
            files={"audio": ("clip", data, "application/octet-stream")},
            data={"verify": "true", **{k: str(v) for k, v in form.items()}},
        )


def wav(samples_: np.ndarray, rate: int = 48000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples_, rate, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def test_int8_birdnet_agrees_and_matches_offline(server: Service, engine: EmbeddingEngine) -> None:
    response = post(server, YELLOWTHROAT.read_bytes(), model="birdnet-v2.4:2.4.0:quantized")
    assert response.status_code == 200, response.text
    body = response.json()
    summary = body["verification"]
    assert summary["available"] and summary["verifier"] == "birdnet-v2.4:2.4.0:base"
    assert summary["summary"]["mean"] >= 0.8 and summary["summary"]["counted"] >= 1
    rows: list[WindowRow] = []
    verify_recordings(
        [YELLOWTHROAT], model="birdnet-v2.4:2.4.0:quantized", engine=engine, sink=rows.append
    )
    assert len(rows) == len(body["windows"])
    for w, row in zip(body["windows"], rows, strict=True):
        v = w["verification"]
        assert v["agreement"] == row.verification.agreement
        assert [s["species"] for s in v["verifier_top5"]] == [
            s.species for s in row.verification.verifier_top5
        ]
        assert len(w["embedding"]) == 1024  # the embedding answer itself is untouched


def test_random_model_disagrees_json_and_arrow(server: Service) -> None:
    response = post(server, YELLOWTHROAT.read_bytes(), model="perch-contract:1.0.0")
    assert response.status_code == 200, response.text
    body = response.json()
    s = body["verification"]["summary"]
    assert body["verification"]["mapped_classes"] == 6262
    assert s["counted"] >= 1 and s["mean"] <= 0.2 and s["discrepancies"] > 0
    first = body["windows"][0]["verification"]
    assert first["verifier_top5"][0]["species"] == "Geothlypis trichas"  # BirdNET hears it
    for d in first["discrepancies"]:
        assert {"species", "flagged_by", "primary_score", "verifier_score"} <= set(d)
    arrow = post(server, YELLOWTHROAT.read_bytes(), model="perch-contract:1.0.0", format="arrow")
    assert arrow.status_code == 200
    table = pa.ipc.open_stream(arrow.content).read_all()
    assert table.column("verification_agreement").to_pylist() == [
        w["verification"]["agreement"] for w in body["windows"]
    ]
    assert table.column("verifier_top5").to_pylist()[0] == [
        x["species"] for x in first["verifier_top5"]
    ]
    assert len(table.column("verification_discrepancies").to_pylist()[0]) == len(
        first["discrepancies"]
    )
    with server.client() as c:
        text = c.get("/metrics").text
    counted = [
        v
        for labels, v in samples(text, "sevensense_verification_windows_total")
        if labels.get("model") == "perch-contract" and labels.get("outcome") == "counted"
    ]
    assert counted and counted[0] >= 2
    assert samples(text, "sevensense_verification_agreement_count")


def test_audio_shorter_than_a_birdnet_window(server: Service) -> None:
    clip = audio("labelled/tuxpaint/xanthia.ogg")  # 0.56 s
    response = post(server, clip.read_bytes(), model="perch-contract:1.0.0")
    assert response.status_code == 200, response.text
    (window,) = response.json()["windows"]
    v = window["verification"]
    assert v["verifier_windows"] == 1  # one zero-padded BirdNET window, centred at 1.5 s
    assert v["agreement"] is not None or v["reason"] == "verifier_below_threshold"


def test_silence_has_no_agreement_and_says_why(server: Service) -> None:
    digital = post(server, wav(np.zeros(6 * 48000, dtype=np.float32)), model="perch-contract:1.0.0")
    assert digital.status_code == 200, digital.text
    body = digital.json()
    assert body["windows"] == [] and len(body["skipped"]) >= 1
    assert body["verification"]["available"]
    assert body["verification"]["reason"].startswith("no_windows")
    # Room rumble (brown noise) loud enough to pass the silence gate; BirdNET hears no bird
    # in it. (White hiss would not do: BirdNET v2.4 scores it 0.54 as a drumming woodpecker.)
    rumble = np.cumsum(np.random.default_rng(7).normal(0.0, 1.0, 6 * 48000))
    rumble = (rumble - rumble.mean()) / np.abs(rumble - rumble.mean()).max() * 0.005
    quiet = post(server, wav(rumble.astype(np.float32)), model="perch-contract:1.0.0")
    assert quiet.status_code == 200, quiet.text
    windows = quiet.json()["windows"]
    assert windows
    for w in windows:
        v = w["verification"]
        assert v["agreement"] is None and v["reason"] == "verifier_below_threshold"
        assert v["verifier_best"] < 0.5 and len(v["verifier_top5"]) == 5
    assert quiet.json()["verification"]["summary"]["counted"] == 0


def test_birdnet_itself_is_verified_trivially(server: Service) -> None:
    response = post(server, YELLOWTHROAT.read_bytes())  # the default model: BirdNET base
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["verification"]["trivial"] is True
    assert "verifier itself" in body["verification"]["reason"]
    assert body["verification"].get("summary") is None
    assert all(w.get("verification") is None for w in body["windows"])


def test_verify_false_adds_nothing(server: Service) -> None:
    with server.client() as c:
        response = c.post(
            "/embed",
            files={"audio": ("clip", YELLOWTHROAT.read_bytes(), "application/octet-stream")},
            data={"model": "perch-contract:1.0.0"},
        )
    body = response.json()
    assert body.get("verification") is None
    assert all(w.get("verification") is None for w in body["windows"])
