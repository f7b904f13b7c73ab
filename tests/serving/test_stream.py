"""``WS /stream`` against the real service: a live stream gives the windows ``/embed`` gives
for the same file, whatever the frame sizes, across dropped connections; bad input and
abuse end the stream with the documented close code."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
import wsproto
from httpx_ws import WebSocketDisconnect, aconnect_ws
from wsproto.events import AcceptConnection, BytesMessage, Request, TextMessage

from sevensense.client.stream import FileSource, StreamClientError, stream_audio
from tests.conftest import audio
from tests.serving.conftest import Service

SOUNDSCAPE = audio("soundscape_birdnet_120s_48k.flac")  # 48 kHz int16: BirdNET's own rate
CLIP = audio("perch_clap_21s_16k.wav")
OPEN = {"type": "open", "sample_rate": 48000}
PERCH = "perch-contract:1.0.0"


def ws_url(server: Service) -> str:
    return server.url.replace("http://", "ws://") + "/stream"


@pytest.fixture(scope="module")
def reference(server: Service) -> dict[float, dict[str, Any]]:
    """``/embed`` on the file: the windows every stream below must reproduce."""
    with server.client() as c:
        r = c.post(
            "/embed",
            files={"audio": (SOUNDSCAPE.name, SOUNDSCAPE.read_bytes(), "audio/flac")},
            data={"top_k": "5"},
        )
    assert r.status_code == 200, r.text
    return {w["start_s"]: w for w in r.json()["windows"]}


def assert_same_windows(
    got: dict[int, dict[str, Any]], reference: dict[float, dict[str, Any]]
) -> None:
    by_start = {w["start_s"]: w for w in got.values()}
    assert sorted(by_start) == sorted(reference)
    for start, want in reference.items():
        have = by_start[start]
        assert have["end_s"] == want["end_s"]
        np.testing.assert_allclose(have["embedding"], want["embedding"], atol=1e-5)
        assert [s["label"] for s in have["top_k"]] == [s["label"] for s in want["top_k"]]


def pcm16() -> tuple[bytes, int]:
    data, rate = sf.read(SOUNDSCAPE, dtype="int16")
    return data.astype("<i2").tobytes(), rate


def opening(rate: int, **extra: Any) -> str:
    return json.dumps(
        {"type": "open", "sample_rate": rate, "encoding": "s16le", "top_k": 5, **extra}
    )


async def _session(
    server: Service, messages: list[str | bytes], key: str | None = "partner", until: int = 0
) -> tuple[list[dict[str, Any]], int | None]:
    """Send ``messages`` and read until the server closes: (messages received, close code);
    or, with ``until``, drop the connection after that many messages."""
    headers = {"X-API-Key": server.keys[key]} if key else {}
    received: list[dict[str, Any]] = []
    async with (
        httpx.AsyncClient(headers=headers) as client,
        aconnect_ws(ws_url(server), client, max_message_size_bytes=1 << 24) as ws,
    ):
        for m in messages:
            if isinstance(m, bytes):
                await ws.send_bytes(m)
            else:
                await ws.send_text(m)
        try:
            while not until or len(received) < until:
                received.append(json.loads(await ws.receive_text(timeout=30)))
        except WebSocketDisconnect as exc:
            return received, exc.code
    return received, None


def session(
    server: Service, messages: list[str | bytes], key: str | None = "partner", until: int = 0
) -> Any:
    return asyncio.run(_session(server, messages, key, until))


# --- the same windows as a file -----------------------------------------------------------------


def test_soundscape_at_8x_in_100ms_frames_equals_embed(
    server: Service, reference: dict[float, dict[str, Any]]
) -> None:
    run = asyncio.run(
        stream_audio(
            ws_url(server),
            FileSource(SOUNDSCAPE),
            {"top_k": 5},
            api_key=server.keys["partner"],
            speed=8.0,
            frame_ms=100.0,
        )
    )
    assert run.summary is not None and run.duplicates == 0 and run.reconnects == 0
    assert_same_windows(run.windows, reference)
    assert run.summary.windows == len(reference)
    assert run.summary.duration_s == pytest.approx(120.0)
    assert run.summary.frames == 1200 and run.summary.throttles == 0
    # Each window is answered within about one hop of its last sample arriving.
    assert run.summary.latency_ms_p50 is not None and run.summary.latency_ms_p50 < 3000
    metrics = httpx.get(f"{server.url}/metrics").text
    assert "sevensense_stream_frames_total" in metrics
    assert "sevensense_stream_window_latency_seconds_bucket" in metrics


async def _dropped_and_resumed(server: Service, seed: int) -> tuple[dict[int, Any], int, int]:
    """Random frame sizes; the connection is cut at a random point, then resumed from an
    offset earlier than what the server holds (the client does not know what arrived)."""
    data, rate = pcm16()
    rng = random.Random(seed)
    frames, at = [], 0
    while at < len(data):
        n = rng.randint(1, 40_000)  # odd sizes split samples between frames
        frames.append((at, data[at : at + n]))
        at += n
    cut = rng.randint(len(frames) // 4, 3 * len(frames) // 4)
    stream_id = f"drop-{seed}"
    headers = {"X-API-Key": server.keys["partner"]}
    windows: dict[int, Any] = {}
    duplicates = 0
    async with httpx.AsyncClient(headers=headers) as client:
        async with aconnect_ws(ws_url(server), client, max_message_size_bytes=1 << 24) as ws:
            await ws.send_text(opening(rate, stream_id=stream_id))
            assert json.loads(await ws.receive_text())["type"] == "ready"
            for _, frame in frames[:cut]:
                await ws.send_bytes(frame)
            for _ in range(3):  # read a few answers, then the link dies with more in flight
                body = json.loads(await ws.receive_text(timeout=30))
                if body["type"] == "window":
                    windows[body["start_sample"]] = body
        await asyncio.sleep(0.5)
        resume_from = rng.randint(0, 48_000 * 8)  # within the 10-s burst the server took
        async with aconnect_ws(ws_url(server), client, max_message_size_bytes=1 << 24) as ws:
            last = max(windows) if windows else -1
            await ws.send_text(
                opening(rate, stream_id=stream_id, resume_from=resume_from, last_window=last)
            )
            ready = json.loads(await ws.receive_text())
            assert ready["type"] == "ready" and ready["resumed"] is True, ready
            assert ready["received_frames"] >= resume_from
            byte = resume_from * 2
            first = next(i for i, (start, f) in enumerate(frames) if start + len(f) > byte)
            head = frames[first][1][byte - frames[first][0] :]
            await ws.send_bytes(head)
            for _, frame in frames[first + 1 :]:
                await ws.send_bytes(frame)
            await ws.send_text(json.dumps({"type": "end"}))
            while True:
                body = json.loads(await ws.receive_text(timeout=60))
                if body["type"] == "window":
                    duplicates += body["start_sample"] in windows
                    windows[body["start_sample"]] = body
                elif body["type"] == "summary":
                    assert body["resumes"] == 1
                    return windows, duplicates, ready["replayed"]


def test_random_frames_with_a_drop_and_resume_give_exactly_the_file_windows(
    server: Service, reference: dict[float, dict[str, Any]]
) -> None:
    windows, duplicates, _ = asyncio.run(_dropped_and_resumed(server, seed=7))
    assert duplicates == 0
    assert_same_windows(windows, reference)


class DroppingProxy:
    """A TCP proxy on loopback that cuts its first connection after ``cut_bytes`` upstream."""

    def __init__(self, target_port: int, cut_bytes: int) -> None:
        self.target_port = target_port
        self.cut_bytes = cut_bytes
        self.connections = 0
        self.port = 0

    async def start(self) -> asyncio.Server:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        limit = self.cut_bytes if self.connections == 1 else None
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: bool) -> None:
            moved = 0
            try:
                while data := await src.read(65536):
                    moved += len(data)
                    if count and limit is not None and moved > limit:
                        break
                    dst.write(data)
                    await dst.drain()
            finally:
                for w in (writer, up_w):
                    w.transport.abort()

        await asyncio.gather(pipe(reader, up_w, True), pipe(up_r, writer, False))


def test_the_reference_client_resumes_through_a_dropped_link(
    server: Service, reference: dict[float, dict[str, Any]]
) -> None:
    async def go() -> Any:
        proxy = DroppingProxy(server.port, cut_bytes=4_000_000)  # ~40 s of the soundscape
        listening = await proxy.start()
        try:
            return await stream_audio(
                f"ws://127.0.0.1:{proxy.port}/stream",
                FileSource(SOUNDSCAPE),
                {"top_k": 5, "stream_id": "through-proxy"},
                api_key=server.keys["partner"],
                speed=None,
                frame_ms=250.0,
            )
        finally:
            listening.close()

    run = asyncio.run(go())
    assert run.reconnects >= 1 and run.duplicates == 0
    assert run.summary is not None and run.summary.resumes >= 1
    assert_same_windows(run.windows, reference)


def test_the_cli_streams_raw_pcm_from_stdin(server: Service, tmp_path: Path) -> None:
    pcm, rate = sf.read(CLIP, dtype="int16")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sevensense.cli",
            "stream",
            "-",
            "--url",
            server.url,
            "--rate",
            str(rate),
            "--speed",
            "0",
            "--top-k",
            "1",
        ],
        check=False,
        input=pcm.astype("<i2").tobytes(),
        capture_output=True,
        env={"SEVENSENSE_API_KEY": server.keys["partner"], "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr.decode()
    lines = [json.loads(line) for line in out.stdout.decode().splitlines()]
    windows = [m for m in lines if m["type"] == "window"]
    skipped = [m for m in lines if m["type"] == "skipped"]  # the profile's silence gate
    assert windows and len(windows) + len(skipped) == 8  # 21.2 s: 3-s windows, last padded
    summary = lines[-1]
    assert summary["type"] == "summary" and summary["windows"] == len(windows)
    assert summary["duration_s"] == pytest.approx(len(pcm) / rate)


def test_verify_on_a_stream_agrees_with_verify_on_the_upload(server: Service) -> None:
    """A Perch-contract stream with verify=true: each window's BirdNET verification follows
    its result, pooled from the same BirdNET windows an upload of the file pools."""
    with server.client() as c:
        r = c.post(
            "/embed",
            files={"audio": (SOUNDSCAPE.name, SOUNDSCAPE.read_bytes(), "audio/flac")},
            data={"model": PERCH, "verify": "true", "top_k": "5"},
        )
    assert r.status_code == 200, r.text
    upload = {w["index"]: w["verification"] for w in r.json()["windows"]}
    messages: list[dict[str, Any]] = []
    run = asyncio.run(
        stream_audio(
            ws_url(server),
            FileSource(SOUNDSCAPE),
            {"model": PERCH, "verify": True, "include_embedding": False},
            api_key=server.keys["partner"],
            speed=None,
            frame_ms=250.0,
            on_message=messages.append,
        )
    )
    streamed = {m["index"]: m["verification"] for m in messages if m["type"] == "verification"}
    assert sorted(streamed) == sorted(upload) == sorted(w["index"] for w in run.windows.values())
    for i, want in upload.items():
        have = streamed[i]
        assert have["verifier_windows"] == want["verifier_windows"]
        assert (have["agreement"] is None) == (want["agreement"] is None), i
    assert run.summary is not None and run.summary.verification is not None
    assert run.summary.verification.windows == len(upload)
    same = [streamed[i].get("agreement") == upload[i]["agreement"] for i in upload]
    assert sum(same) >= 0.9 * len(same)  # near-tied random-weight logits may swap a class


def test_a_resumed_verify_stream_gets_every_verification_exactly_once(server: Service) -> None:
    """Verifications sent into the dropped socket are sent again (``last_verified``), the
    ones the client has are not."""
    messages: list[dict[str, Any]] = []

    async def go() -> Any:
        proxy = DroppingProxy(server.port, cut_bytes=4_000_000)
        listening = await proxy.start()
        try:
            return await stream_audio(
                f"ws://127.0.0.1:{proxy.port}/stream",
                FileSource(SOUNDSCAPE),
                {"model": PERCH, "verify": True, "include_embedding": False, "stream_id": "v-r"},
                api_key=server.keys["partner"],
                speed=None,
                frame_ms=250.0,
                on_message=messages.append,
            )
        finally:
            listening.close()

    run = asyncio.run(go())
    assert run.reconnects >= 1 and run.duplicates == 0
    verified = [m["index"] for m in messages if m["type"] == "verification"]
    assert sorted(verified) == sorted(w["index"] for w in run.windows.values())


def test_verify_on_a_birdnet_stream_is_trivial(server: Service) -> None:
    received, _ = session(server, [opening(48000, verify=True)], until=1)
    assert received[0]["verification"]["trivial"] is True


def test_index_true_stores_the_stream_under_its_key_alone(server: Service) -> None:
    run = asyncio.run(
        stream_audio(
            ws_url(server),
            FileSource(CLIP),
            {"index": True, "stream_id": "sensor-3.live", "site": "east"},
            api_key=server.keys["slow"],
            speed=None,
        )
    )
    assert run.summary is not None and run.summary.indexed == len(run.windows) > 0
    vector = json.dumps(run.windows[min(run.windows)]["embedding"])
    found = {}
    for key in ("slow", "partner"):
        with server.client(key) as c:
            r = c.post("/search", data={"embedding": vector, "k": "100"})
            if r.status_code == 429:  # "slow" may send one request per 5 s
                time.sleep(r.json()["error"]["details"]["retry_after_s"] + 0.1)
                r = c.post("/search", data={"embedding": vector, "k": "100"})
        if r.status_code == 409 and key == "partner":  # this key indexed nothing itself
            assert r.json()["error"]["code"] == "index_empty"
            found[key] = set()
            continue
        assert r.status_code == 200, r.text
        found[key] = {n["recording_id"] for n in r.json()["queries"][0]["neighbours"]}
    assert found["slow"] == {"sensor-3.live"}
    assert "sensor-3.live" not in found["partner"]


# --- bad input and abuse --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("messages", "code", "error"),
    [
        (
            [json.dumps({"type": "open", "sample_rate": 48000, "encoding": "s24le"})],
            4422,
            "invalid_request",
        ),
        (
            [json.dumps({"type": "open", "sample_rate": 48000, "colour": "red"})],
            4422,
            "invalid_request",
        ),
        (["not json"], 4422, "invalid_request"),
        ([b"\x00\x01"], 4422, "stream_protocol"),
        ([opening(48000, model="no-such-model")], 4404, "model_not_found"),
        ([opening(48000, stream_id="never-opened", resume_from=0)], 4404, "stream_not_found"),
        ([opening(48000), b"\x00" * 300_000], 4413, "payload_too_large"),
        (
            [opening(16000, encoding="f32le"), np.full(1600, np.nan, "<f4").tobytes()],
            4422,
            "invalid_samples",
        ),
        (
            [opening(48000), b"\x00" * 96_000, json.dumps({"type": "end"}), b"\x00" * 9600],
            4422,
            "stream_protocol",
        ),
    ],
    ids=[
        "wrong-encoding",
        "unknown-key",
        "not-json",
        "audio-before-open",
        "unknown-model",
        "unknown-stream",
        "frame-too-large",
        "nan-samples",
        "frame-after-end",
    ],
)
def test_bad_input_ends_the_stream_with_its_code(
    server: Service, messages: list[str | bytes], code: int, error: str
) -> None:
    received, closed = session(server, messages)
    assert closed == code
    errors = [m for m in received if m["type"] == "error"]
    assert errors and errors[-1]["code"] == error and errors[-1]["close_code"] == code


@pytest.mark.parametrize(("key", "code"), [(None, 4401), ("reader", 4403)])
def test_keys_are_checked(server: Service, key: str | None, code: int) -> None:
    received, closed = session(server, [opening(48000)], key=key)
    assert closed == code and received[-1]["type"] == "error"


def test_another_key_cannot_resume_a_stream(server: Service) -> None:
    data, rate = pcm16()
    received, _ = session(server, [opening(rate, stream_id="tenant-a"), data[:96_000]], until=1)
    assert received[0]["type"] == "ready"  # then the link drops: the stream waits for a resume
    resume = opening(rate, stream_id="tenant-a", resume_from=0)
    received, closed = session(server, [resume], key="admin")
    assert closed == 4404 and received[-1]["code"] == "stream_not_found"
    received, _ = session(server, [resume], until=1)
    assert received[0]["type"] == "ready" and received[0]["resumed"] is True
    assert received[0]["received_frames"] == 48_000


def test_a_reconnect_takes_over_a_stream_whose_old_socket_still_looks_open(
    server: Service,
) -> None:
    data, rate = pcm16()

    async def go() -> tuple[dict[str, Any], int | None]:
        headers = {"X-API-Key": server.keys["partner"]}
        async with (
            httpx.AsyncClient(headers=headers) as client,
            aconnect_ws(ws_url(server), client) as old,
        ):
            await old.send_text(opening(rate, stream_id="takeover"))
            assert json.loads(await old.receive_text())["type"] == "ready"
            await old.send_bytes(data[:96_000])
            await asyncio.sleep(0.5)
            received, _ = await _session(server, [opening(rate, stream_id="takeover")], until=1)
            try:
                while True:
                    await old.receive_text(timeout=10)
            except WebSocketDisconnect as exc:
                return received[0], exc.code
        return received[0], None

    ready, old_closed = asyncio.run(go())
    assert ready["type"] == "ready" and ready["resumed"] is True
    assert ready["received_frames"] == 48_000
    assert old_closed == 4409


def test_open_streams_per_key_are_limited_and_a_fast_sender_is_throttled(
    server: Service,
) -> None:
    data, rate = pcm16()

    async def go() -> tuple[int | None, int]:
        headers = {"X-API-Key": server.keys["admin"]}
        async with contextlib.AsyncExitStack() as stack:
            client = await stack.enter_async_context(httpx.AsyncClient(headers=headers))
            held = []
            for i in range(3):  # the per-key limit in the test server
                ws = await stack.enter_async_context(aconnect_ws(ws_url(server), client))
                await ws.send_text(opening(rate, stream_id=f"held-{i}"))
                assert json.loads(await ws.receive_text())["type"] == "ready"
                held.append(ws)
            refused, closed = await _session(server, [opening(rate)], key="admin")
            assert refused[-1]["code"] == "too_many_streams"
            # As fast as the socket goes: 60 s of audio against 10 s burst + 30× real time.
            throttles = 0
            ws = held[0]
            for at in range(0, 60 * rate * 2, 48_000):
                await ws.send_bytes(data[at : at + 48_000])
            await ws.send_text(json.dumps({"type": "end"}))
            while True:
                body = json.loads(await ws.receive_text(timeout=60))
                throttles += body["type"] == "throttle"
                if body["type"] == "summary":
                    assert body["throttles"] == throttles
                    break
            return closed, throttles

    closed, throttles = asyncio.run(go())
    assert closed == 4429 and throttles >= 1


def test_a_client_that_stops_reading_is_disconnected(server: Service) -> None:
    """A sensor that sends but never reads: a 4-KiB receive buffer fills within a few
    results, and the server gives up after its bound instead of buffering."""
    data, rate = pcm16()
    before = closes(server, "slow_reader")
    conn = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        headers = [(b"x-api-key", server.keys["partner"].encode())]
        sock.sendall(conn.send(Request(host="127.0.0.1", target="/stream", extra_headers=headers)))
        while not any(isinstance(e, AcceptConnection) for e in conn.events()):
            conn.receive_data(sock.recv(4096))
        # Every class's logit in every message: about 100 KB each.
        sock.sendall(conn.send(TextMessage(data=opening(rate, include_logits=True))))
        for at in range(0, 60 * rate * 2, 96_000):  # 60 s at once; nothing is ever read
            sock.sendall(conn.send(BytesMessage(data=data[at : at + 96_000])))
        deadline = time.monotonic() + 30
        while closes(server, "slow_reader") == before and time.monotonic() < deadline:
            time.sleep(0.5)
    assert closes(server, "slow_reader") == before + 1


def closes(server: Service, reason: str) -> float:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith(f'sevensense_stream_closes_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_client_error_is_typed(server: Service) -> None:
    with pytest.raises(StreamClientError) as caught:
        asyncio.run(
            stream_audio(ws_url(server), FileSource(CLIP), {"model": "nope"}, api_key="x" * 40)
        )
    assert caught.value.close_code == 4401
