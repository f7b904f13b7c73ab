"""Every documented failure gets its status and the one JSON error shape, and the server
keeps serving afterwards."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from tests.conftest import audio
from tests.serving.conftest import Service

SAMPLE = audio("birdnet_sample_3s_48k.wav")


def encode(samples: np.ndarray, rate: int, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def upload(
    service: Service, data: bytes, key: str | None = "partner", **form: object
) -> httpx.Response:
    with service.client(key) as c:
        return c.post(
            "/embed",
            files={"audio": ("clip.wav", data, "audio/wav")},
            data={k: str(v) for k, v in form.items()},
        )


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == code, error
    assert error["message"] and isinstance(error["message"], str)
    assert error["request_id"] == response.headers["X-Request-ID"]
    return error  # type: ignore[no-any-return]


def _nan() -> bytes:
    x = np.full(48_000 * 3, 0.1, np.float32)
    x[5_000:6_000] = np.nan
    return encode(x, 48_000, subtype="FLOAT")


BAD_AUDIO: dict[str, tuple[Callable[[], bytes], int, str]] = {
    "empty": (lambda: b"", 422, "empty_audio"),
    "random bytes": (
        lambda: np.random.default_rng(0).bytes(20_000),
        415,
        "unsupported_audio_format",
    ),
    "text": (lambda: b"this is not audio\n" * 100, 415, "unsupported_audio_format"),
    "header only": (lambda: SAMPLE.read_bytes()[:44], 422, "empty_audio"),
    "nan samples": (_nan, 422, "invalid_samples"),
    "too long": (
        lambda: encode(np.zeros(8_000 * 700, np.int16), 8_000, "FLAC"),
        413,
        "audio_too_long",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_AUDIO))
def test_bad_audio_gets_a_clear_error(server: Service, case: str) -> None:
    make, status, code = BAD_AUDIO[case]
    error = assert_error(upload(server, make()), status, code)
    assert "0x" not in str(error["message"])  # no object reprs leak into messages


def test_odd_but_valid_audio_is_served(server: Service) -> None:
    rng = np.random.default_rng(3)
    six_channels = encode(rng.normal(0, 0.1, (48_000 * 3, 6)).astype(np.float32), 48_000)
    low_rate = encode(rng.normal(0, 0.1, 8_000 * 4).astype(np.float32), 8_000)
    silent = encode(np.zeros(48_000 * 6, np.float32), 48_000)
    truncated = SAMPLE.read_bytes()[: len(SAMPLE.read_bytes()) // 3]
    for data, windows in ((six_channels, 1), (low_rate, 2), (truncated, 1)):
        response = upload(server, data)
        assert response.status_code == 200, response.text
        assert len(response.json()["windows"]) == windows
    body = upload(server, silent).json()
    assert body["windows"] == [] and [s["reason"] for s in body["skipped"]] == ["silent"] * 2


def test_upload_over_the_size_limit(server: Service) -> None:
    assert_error(upload(server, b"\0" * (6 * 1024 * 1024)), 413, "payload_too_large")

    def chunks():  # type: ignore[no-untyped-def]
        yield b"--b\r\nContent-Disposition: form-data; name=audio; filename=a.wav\r\n\r\n"
        for _ in range(7):
            yield b"\0" * (1024 * 1024)
        yield b"\r\n--b--\r\n"

    with server.client() as c:
        streamed = c.post(
            "/embed", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"}
        )
    assert "content-length" not in streamed.request.headers
    assert_error(streamed, 413, "payload_too_large")


@pytest.mark.parametrize(
    ("form", "code", "status"),
    [
        ({"top_k": "many"}, "invalid_request", 422),
        ({"route": "tpu"}, "invalid_request", 422),
        ({"overlap": "1.5"}, "invalid_request", 422),
        ({"hop_s": "4.0"}, "invalid_request", 422),
        ({"hop_s": "2.2e-311"}, "invalid_request", 422),
        ({"overlap": "0.95"}, "invalid_request", 422),
        ({"format": "xml"}, "invalid_request", 422),
        ({"model": "no-such-model"}, "model_not_found", 404),
        ({"model": "birdnet-v2.4:9.9.9"}, "model_not_found", 404),
        ({"model": "a:b:c:d"}, "model_not_found", 404),
    ],
)
def test_bad_options(server: Service, form: dict[str, str], code: str, status: int) -> None:
    assert_error(upload(server, SAMPLE.read_bytes(), **form), status, code)


def test_malformed_requests(server: Service) -> None:
    with server.client() as c:
        assert_error(c.post("/embed", json={"audio": "x"}), 422, "invalid_request")
        assert_error(c.post("/embed", data={"top_k": "3"}), 422, "invalid_request")
        assert_error(c.get("/embed"), 405, "method_not_allowed")
        assert_error(c.get("/no/such/path"), 404, "not_found")
        assert_error(
            c.put("/admin/models/birdnet-v2.4/traffic", content=b"{not json"),
            403,
            "insufficient_scope",
        )
    with server.client("admin") as c:
        assert_error(
            c.put(
                "/admin/models/birdnet-v2.4/traffic",
                content=b"{not json",
                headers={"content-type": "application/json"},
            ),
            422,
            "invalid_request",
        )
        assert_error(
            c.put("/admin/models/birdnet-v2.4/traffic", json={"weights": {"2.4.0": 1}, "x": 1}),
            422,
            "invalid_request",
        )
        assert_error(
            c.put("/admin/models/birdnet-v2.4/traffic", json={"weights": {"2.4.0": -5}}),
            400,
            "invalid_rollout",
        )


def test_authentication_and_scopes(server: Service) -> None:
    assert_error(upload(server, SAMPLE.read_bytes(), key=None), 401, "missing_api_key")
    with httpx.Client(base_url=server.url, headers={"X-API-Key": "7s_wrong"}) as c:
        assert_error(c.get("/models"), 401, "invalid_api_key")
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.keys['reader']}"}
    ) as c:
        assert c.get("/models").status_code == 200
    assert_error(upload(server, SAMPLE.read_bytes(), key="reader"), 403, "insufficient_scope")
    with server.client("partner") as c:
        response = c.post("/admin/models/perch-contract/activate", json={"version": "1.0.0"})
    assert_error(response, 403, "insufficient_scope")


def test_rate_limit_per_key(server: Service) -> None:
    first = upload(server, SAMPLE.read_bytes(), key="slow")
    assert first.status_code == 200
    second = upload(server, SAMPLE.read_bytes(), key="slow")
    assert_error(second, 429, "rate_limited")
    assert int(second.headers["Retry-After"]) >= 1
    assert upload(server, SAMPLE.read_bytes(), key="partner").status_code == 200


def test_server_keeps_serving_after_bad_requests(server: Service, tmp_path: Path) -> None:
    for make, _, _ in BAD_AUDIO.values():
        upload(server, make())
    response = upload(server, SAMPLE.read_bytes())
    assert response.status_code == 200
    with server.client(None) as c:
        assert c.get("/livez").status_code == 200
        assert c.get("/readyz").status_code == 200
