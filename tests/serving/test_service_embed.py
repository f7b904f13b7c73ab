"""POST /embed against the real service graph: parity with the engine, batching across
concurrent requests, formats, metrics, readiness with the GPU path unusable."""

from __future__ import annotations

import io
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf

from sevensense.inference.engine import EmbeddingEngine, EmbedOptions
from tests.conftest import audio
from tests.serving.conftest import Service, samples

SOUNDSCAPE = "soundscape_birdnet_120s_48k.flac"


def post(service: Service, path: Path | bytes, key: str = "partner", **form: object):  # type: ignore[no-untyped-def]
    data = path.read_bytes() if isinstance(path, Path) else path
    with service.client(key) as c:
        return c.post(
            "/embed",
            files={"audio": ("clip", data, "application/octet-stream")},
            data={k: str(v) for k, v in form.items()},
        )


def clip_bytes(seconds: float, offset_s: float, name: str = SOUNDSCAPE) -> bytes:
    data, rate = sf.read(audio(name), dtype="float32")
    start = int(offset_s * rate)
    buf = io.BytesIO()
    sf.write(buf, data[start : start + int(seconds * rate)], rate, format="WAV")
    return buf.getvalue()


def engine_embeddings(
    engine: EmbeddingEngine, source: object, model: str | None = None
) -> np.ndarray:
    results = list(engine.embed_file(source, model=model, options=EmbedOptions(top_k=5)))  # type: ignore[arg-type]
    return np.stack([r.embedding for r in results])


def test_embed_matches_engine(server: Service, engine: EmbeddingEngine) -> None:
    response = post(server, audio(SOUNDSCAPE), top_k=5)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": "birdnet-v2.4", "version": "2.4.0", "variant": "base"}
    assert response.headers["X-Model-Version"] == "2.4.0"
    assert body["duration_s"] == pytest.approx(120.0)
    assert len(body["windows"]) == 40
    served = np.array([w["embedding"] for w in body["windows"]], dtype=np.float32)
    direct = list(engine.embed_file(audio(SOUNDSCAPE), options=EmbedOptions(top_k=5)))
    assert np.abs(served - np.stack([r.embedding for r in direct])).max() < 1e-5
    for w, r in zip(body["windows"], direct, strict=True):
        assert [s["label"] for s in w["top_k"]] == [label for label, _ in r.top_k]
        assert (w["start_s"], w["end_s"]) == pytest.approx((r.start_s, r.end_s))
    assert [w["index"] for w in body["windows"]] == list(range(40))


def test_concurrent_requests_are_batched_and_exact(
    server: Service, engine: EmbeddingEngine
) -> None:
    clips = [clip_bytes(5.0, 5.0 * i) for i in range(20)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda c: post(server, c), clips))
    assert [r.status_code for r in responses] == [200] * 20, responses[0].text
    for clip, response in zip(clips, responses, strict=True):
        served = np.array([w["embedding"] for w in response.json()["windows"]], dtype=np.float32)
        assert served.shape == (2, 1024)
        assert np.abs(served - engine_embeddings(engine, clip)).max() < 1e-5
    with server.client() as c:
        text = c.get("/metrics").text
    # The custom histogram counts windows per session.run on the CPU path.
    buckets = {
        float(labels["le"]): value
        for labels, value in samples(text, "sevensense_batch_size_bucket")
        if labels["path"] == "cpu"
    }
    assert buckets, text[:2000]
    total = max(buckets.values())
    assert total - buckets[2.0] > 0, f"no batch larger than 2 windows: {buckets}"


def test_gpu_unusable_falls_back_to_cpu_and_stays_ready(server: Service) -> None:
    response = post(server, audio("birdnet_sample_3s_48k.wav"))
    assert response.status_code == 200
    body = response.json()
    assert body["route"] == "cpu" and body["providers"] == ["CPUExecutionProvider"]
    assert body["fallback"] is True  # the GPU path exists but cannot serve on this host
    assert response.headers["X-Served-By"] == "cpu"
    with server.client() as c:
        assert c.get("/readyz").status_code == 200
        status = c.get("/status").json()
    assert status["paths"]["cpu"]["ready"] is True
    assert status["paths"]["gpu"]["ready"] is False and status["paths"]["gpu"]["reason"]
    forced = post(server, audio("birdnet_sample_3s_48k.wav"), route="gpu")
    assert forced.status_code == 503 and forced.json()["error"]["code"] == "no_model_path"
    assert int(forced.headers["Retry-After"]) >= 1


def test_arrow_response_equals_json(server: Service) -> None:
    clip = clip_bytes(12.0, 30.0)
    as_json = post(server, clip, top_k=3).json()
    response = post(server, clip, top_k=3, format="arrow", include_logits="true")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.apache.arrow.stream"
    table = pa.ipc.open_stream(response.content).read_all()
    assert table.num_rows == len(as_json["windows"]) == 4
    emb = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    assert np.abs(emb - np.array([w["embedding"] for w in as_json["windows"]])).max() < 1e-6
    assert table.column("top_labels").to_pylist()[0] == [
        s["label"] for s in as_json["windows"][0]["top_k"]
    ]
    assert table.schema.field("logits").type.list_size == 6522
    meta = table.schema.metadata[b"sevensense"]
    assert b'"birdnet-v2.4"' in meta


def test_options_change_windowing_and_outputs(server: Service) -> None:
    clip = clip_bytes(9.0, 0.0)
    base = post(server, clip).json()
    hop = post(server, clip, hop_s=1.5, top_k=0, include_logits="true").json()
    assert len(base["windows"]) == 3 and base["hop_s"] == pytest.approx(3.0)
    assert hop["hop_s"] == pytest.approx(1.5) and len(hop["windows"]) == 5
    assert hop["windows"][0]["top_k"] == [] and len(hop["windows"][0]["logits"]) == 6522
    assert [w["start_s"] for w in hop["windows"][:3]] == pytest.approx([0.0, 1.5, 3.0])


def test_pinned_model_version_and_perch_contract(
    server: Service, perch_engine: EmbeddingEngine
) -> None:
    path = audio("perch_testclip_10s_16k.flac")
    response = post(server, path, model="perch-contract:1.0.0", include_spectrogram="true")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["version"] == "1.0.0" and body["sample_rate"] == 32000
    assert body["embedding_dim"] == 1536
    served = np.array([w["embedding"] for w in body["windows"]], dtype=np.float32)
    direct = engine_embeddings(perch_engine, path, model="perch-contract:1.0.0")
    assert np.abs(served - direct).max() < 1e-5
    assert np.array(body["windows"][0]["spectrogram"]).shape == (500, 128)


def test_metrics_are_exported(server: Service) -> None:
    post(server, audio("birdnet_sample_3s_48k.wav"))
    with server.client() as c:
        text = c.get("/metrics").text
    for name in (
        "sevensense_http_requests_total",
        "sevensense_http_request_seconds_bucket",
        "sevensense_embed_requests_total",
        "sevensense_inference_queue_seconds_bucket",
        "sevensense_inference_compute_seconds_bucket",
        "sevensense_batch_size_bucket",
        "sevensense_embedding_norm_bucket",
        "sevensense_model_windows_total",
        "sevensense_path_fallbacks_total",
    ):
        assert name in text, name
    assert re.search(r'sevensense_model_windows_total\{[^}]*version="2.4.0"', text)
