"""The front door against a real server: refusals come from the headers, before the body is
read; slow bodies and slow headers are cut within their bounds; a flood of malformed
requests gets typed errors and leaves the service ready.

The clients here are raw sockets, not httpx: a test must see how many bytes a client got to
send before the answer arrived, and must keep reading while it sends, as curl does.
"""

from __future__ import annotations

import json
import select
import socket
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from load_tests.raw_http import MULTIPART, Answer, read_answer, upload
from sevensense.serving.access.keys import generate_key
from sevensense.serving.http.front_door import UploadPace, UploadSlots
from tests.conftest import audio
from tests.serving.conftest import Service, free_port, service_env

MiB = 1024 * 1024
WINDOW_S = 2.0
MIN_KIB_PER_S = 64.0
HEADER_TIMEOUT_S = 2.0
PER_KEY = 3
SAMPLE = audio("birdnet_sample_3s_48k.wav")


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory, serving_models: Path) -> Iterator[Service]:
    """A server with the production upload limit (the issue's 60 MB must fit under it) and
    front-door bounds small enough to test in seconds."""
    state = tmp_path_factory.mktemp("front-door-state")
    keys = {k: generate_key() for k in ("partner", "reader", "admin", "slow")}
    env = service_env(
        serving_models,
        state,
        keys,
        SEVENSENSE_SERVING__MAX_UPLOAD_MB="64",
        SEVENSENSE_SERVING__FRONT_DOOR__UPLOAD_MIN_KIB_PER_S=str(MIN_KIB_PER_S),
        SEVENSENSE_SERVING__FRONT_DOOR__UPLOAD_WINDOW_S=str(WINDOW_S),
        SEVENSENSE_SERVING__FRONT_DOOR__HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
        SEVENSENSE_SERVING__FRONT_DOOR__MAX_UPLOADS_PER_KEY=str(PER_KEY),
        SEVENSENSE_SERVING__FRONT_DOOR__MAX_UPLOADS_TOTAL="32",
    )
    service = Service(free_port(), env, state / "server.log", keys)
    service.start()
    yield service
    service.stop()


def assert_refused(answer: Answer, status: int, code: str) -> None:
    assert answer.status == status, answer
    error = answer.json()["error"]
    assert isinstance(error, dict) and error["code"] == code, error
    assert error["request_id"] == answer.headers["x-request-id"]


# --- refused from the headers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "status", "code"),
    [(None, 401, "missing_api_key"), ("wrong", 401, "invalid_api_key")],
)
def test_unauthenticated_60mb_upload_is_refused_before_its_body(
    door: Service, key: str | None, status: int, code: str
) -> None:
    headers = dict(MULTIPART)
    if key:
        headers["X-API-Key"] = generate_key()
    answer = upload(door.port, headers, total=60 * MiB, rate_bps=2 * MiB)
    assert_refused(answer, status, code)
    assert answer.elapsed_s < 1.0, answer.elapsed_s
    assert answer.sent < 1 * MiB, answer.sent
    assert answer.headers["connection"] == "close"


def test_key_without_the_scope_is_refused_before_its_body(door: Service) -> None:
    headers = {"X-API-Key": door.keys["reader"], **MULTIPART}
    answer = upload(door.port, headers, total=60 * MiB, rate_bps=2 * MiB)
    assert_refused(answer, 403, "insufficient_scope")
    assert answer.elapsed_s < 1.0 and answer.sent < 1 * MiB


def test_key_over_its_rate_limit_is_refused_before_its_body(door: Service) -> None:
    with door.client("slow") as c:  # 0.2 requests/s, burst 1: this spends it
        assert c.get("/models").status_code == 200
    headers = {"X-API-Key": door.keys["slow"], **MULTIPART}
    answer = upload(door.port, headers, total=60 * MiB, rate_bps=2 * MiB)
    assert_refused(answer, 429, "rate_limited")
    assert int(answer.headers["retry-after"]) >= 1
    assert answer.elapsed_s < 1.0 and answer.sent < 1 * MiB


def test_declared_length_over_the_limit_is_refused_before_its_body(door: Service) -> None:
    headers = {"X-API-Key": door.keys["partner"], **MULTIPART}
    answer = upload(door.port, headers, total=65 * MiB, rate_bps=2 * MiB)
    assert_refused(answer, 413, "payload_too_large")
    assert answer.elapsed_s < 1.0 and answer.sent < 1 * MiB


def test_chunked_upload_is_cut_as_soon_as_it_passes_the_limit(door: Service) -> None:
    headers = {"X-API-Key": door.keys["partner"], **MULTIPART}
    answer = upload(
        door.port, headers, total=80 * MiB, rate_bps=float("inf"), chunk=256 * 1024, chunked=True
    )
    assert_refused(answer, 413, "payload_too_large")
    # Cut at 64 MiB; what the client had sent beyond that is what the socket buffers held.
    assert 64 * MiB < answer.sent < 72 * MiB, answer.sent


# --- while the body arrives -------------------------------------------------------------------


def timed_embed(door: Service, key: str = "admin") -> float:
    started = time.perf_counter()
    with door.client(key) as c:
        response = c.post(
            "/embed",
            files={"audio": ("clip.wav", SAMPLE.read_bytes(), "audio/wav")},
            data={"top_k": "1"},
        )
    assert response.status_code == 200, response.text
    return time.perf_counter() - started


def test_slow_uploads_are_cut_while_others_keep_their_latency(door: Service) -> None:
    for _ in range(2):
        timed_embed(door)  # warm
    baseline = statistics.median(timed_embed(door) for _ in range(5))
    headers = {"X-API-Key": door.keys["partner"], **MULTIPART}
    with ThreadPoolExecutor(PER_KEY) as pool:
        # One byte every half second: far under 64 KiB/s.
        crawling = [
            pool.submit(upload, door.port, headers, total=10 * MiB, rate_bps=2.0, chunk=1)
            for _ in range(PER_KEY)
        ]
        time.sleep(0.3)
        during = [timed_embed(door) for _ in range(5)]
        answers = [f.result() for f in crawling]
    for answer in answers:
        assert_refused(answer, 408, "upload_too_slow")
        assert WINDOW_S - 0.2 <= answer.elapsed_s <= WINDOW_S + 1.5, answer.elapsed_s
    assert statistics.median(during) <= 2 * baseline + 0.5, (baseline, during)


def test_uploads_in_progress_are_limited_per_key(door: Service) -> None:
    headers = {"X-API-Key": door.keys["partner"], **MULTIPART}
    with ThreadPoolExecutor(PER_KEY) as pool:
        holding = [
            pool.submit(upload, door.port, headers, total=10 * MiB, rate_bps=2.0, chunk=1)
            for _ in range(PER_KEY)
        ]
        time.sleep(0.5)
        extra = upload(door.port, headers, total=1 * MiB, rate_bps=2 * MiB)
        other_key = timed_embed(door, "admin")  # another key is not held up
        held = [f.result() for f in holding]
    assert all(a.status == 408 for a in held), held
    assert_refused(extra, 503, "overloaded")
    assert int(extra.headers["retry-after"]) >= 1
    assert extra.elapsed_s < 1.0
    assert other_key < 30


def test_slow_headers_are_cut(door: Service) -> None:
    sock = socket.create_connection(("127.0.0.1", door.port), timeout=30)
    started = time.monotonic()
    sock.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\n")
    answer = b""
    try:
        for _ in range(40):
            sock.sendall(b"X")
            readable, _, _ = select.select([sock], [], [], 0.5)
            if readable:
                answer = sock.recv(65536)
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    elapsed = time.monotonic() - started
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "header_timeout"
    assert HEADER_TIMEOUT_S - 0.2 <= elapsed <= HEADER_TIMEOUT_S + 1.5, elapsed


def test_a_flood_of_malformed_requests_gets_typed_errors_and_leaves_the_service_ready(
    door: Service,
) -> None:
    key = door.keys["partner"]

    def raw(request: bytes) -> tuple[int, dict[str, str], bytes]:
        with socket.create_connection(("127.0.0.1", door.port), timeout=30) as sock:
            sock.sendall(request)
            return read_answer(sock, b"")

    bad_boundary = (
        b"--nope\r\nContent-Disposition: form-data; name=audio; filename=a.wav\r\n\r\nabc"
    )
    cases: dict[str, tuple[bytes, set[tuple[int, str | None]]]] = {
        "bad boundary": (
            b"POST /embed HTTP/1.1\r\nHost: x\r\nX-API-Key: " + key.encode() + b"\r\n"
            b"Content-Type: multipart/form-data; boundary=xyz\r\n"
            b"Content-Length: %d\r\n\r\n" % len(bad_boundary) + bad_boundary,
            # 16 at once from one key: beyond its 3 upload slots, the rest wait their turn
            {(400, "bad_request"), (503, "overloaded")},
        ),
        "absurd length": (
            b"POST /embed HTTP/1.1\r\nHost: x\r\nX-API-Key: " + key.encode() + b"\r\n"
            b"Content-Length: 99999999999999999999\r\n\r\n",
            {(413, "payload_too_large")},
        ),
        "no key": (
            b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789",
            {(401, "missing_api_key")},
        ),
        "64 KB header": (
            b"GET /models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n",
            # No key: 401. h11 (the HTTP parser) caps only headers that arrive in pieces, at
            # 16 KiB, with a plain 400 before any app code.
            {(401, "missing_api_key"), (400, None)},
        ),
    }
    with ThreadPoolExecutor(8) as pool:
        futures = {
            (name, i): pool.submit(raw, request)
            for name, (request, _) in cases.items()
            for i in range(16)
        }
        results = {k: f.result() for k, f in futures.items()}
    seen: set[tuple[str, int, str | None]] = set()
    for (name, _), (status, _headers, body) in results.items():
        code = None if (status, None) in cases[name][1] else json.loads(body)["error"]["code"]
        assert (status, code) in cases[name][1], (name, status, body[:200])
        seen.add((name, status, code))
    assert ("bad boundary", 400, "bad_request") in seen
    assert httpx.get(f"{door.url}/readyz", timeout=10).status_code == 200
    assert timed_embed(door) < 30


# --- the bookkeeping, without a server ----------------------------------------------------------


def test_pace_cuts_a_crawl_and_a_stall_but_not_a_steady_upload() -> None:
    steady = UploadPace(min_bytes_per_s=1000, window_s=2, start=0.0)
    for t in range(1, 20):  # twice the minimum: always at least a second to spare
        steady.add(2000, float(t))
        assert steady.deadline() >= t + 1
    crawl = UploadPace(min_bytes_per_s=1000, window_s=2, start=0.0)
    crawl.add(10, 0.5)
    assert crawl.deadline() == 2.0  # the first window must hold 2,000 bytes
    burst = UploadPace(min_bytes_per_s=1000, window_s=2, start=0.0)
    burst.add(10_000_000, 0.1)  # a fast start buys no more than one window of silence
    assert burst.deadline() == pytest.approx(2.1)
    off = UploadPace(min_bytes_per_s=0, window_s=2, start=0.0)
    assert off.deadline() == float("inf")


def test_slots_per_key_and_in_total() -> None:
    slots = UploadSlots(per_key=2, total=3)
    assert slots.acquire("a") is None and slots.acquire("a") is None
    assert slots.acquire("a") is not None
    assert slots.acquire("b") is None
    refused = slots.acquire("c")
    assert refused is not None and "on this worker" in refused
    slots.release("a")
    assert slots.acquire("c") is None
    assert len(slots) == 3
