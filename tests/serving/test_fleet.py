"""Two entry tasks, one CPU model service reached by URL, HAProxy in front
(load_tests/cluster.py): a stream resumed on the other task, an entry SIGKILLed and one
SIGTERMed under streams and uploads, give every window exactly once, equal to ``/embed``;
resumes that must not continue are refused with their code. The long version, with 16
streams and latency figures, is ``make load-fleet``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
import wsproto
from httpx_ws import AsyncWebSocketSession, WebSocketDisconnect, aconnect_ws
from wsproto.events import AcceptConnection, BytesMessage, Request, TextMessage

from load_tests.cluster import Fleet
from sevensense.client.stream import FileSource, StreamRun, stream_audio
from sevensense.serving.stream.resume import ResumeState, ResumeTokens
from tests.conftest import audio

SOUNDSCAPE = audio("soundscape_birdnet_120s_48k.flac")  # 48 kHz: no resampling for BirdNET
CLIP = audio("perch_clap_21s_16k.wav")  # 16 kHz: resampled to BirdNET's 48 kHz
PERCH = "perch-contract:1.0.0"  # 32 kHz, 5-s windows: verify=true compares it with BirdNET
DRAIN_S = 20.0  # the default; the test asserts the exit comes well within it


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, serving_models: Path) -> Iterator[Fleet]:
    f = Fleet(
        serving_models,
        tmp_path_factory.mktemp("fleet"),
        extra_env={
            "SEVENSENSE_SERVING__STREAM__DRAIN_S": str(DRAIN_S),
            "SEVENSENSE_SERVING__MAX_UPLOAD_MB": "10",
        },
    )
    try:
        f.start()
        yield f
    finally:
        f.stop()


def embed(fleet: Fleet, path: Path, **form: str) -> dict[float, dict[str, Any]]:
    with httpx.Client(headers={"X-API-Key": fleet.keys["partner"]}, timeout=120) as c:
        r = c.post(
            f"{fleet.url}/embed",
            files={"audio": (path.name, path.read_bytes(), "audio/*")},
            data={"top_k": "5", **form},
        )
    assert r.status_code == 200, r.text
    return {w["start_s"]: w for w in r.json()["windows"]}


def assert_exactly_once(
    run: StreamRun, reference: dict[float, dict[str, Any]], atol: float = 1e-5
) -> None:
    assert run.duplicates == 0
    assert run.summary is not None and run.summary.windows == len(reference)
    got = {w["start_s"]: w for w in run.windows.values()}
    assert sorted(got) == sorted(reference)
    for start, want in reference.items():
        np.testing.assert_allclose(got[start]["embedding"], want["embedding"], atol=atol)
        assert [s["label"] for s in got[start]["top_k"]] == [s["label"] for s in want["top_k"]]


class Alternating:
    """A TCP proxy whose connection k goes to entry k mod 2, cut after ``cuts[k]`` bytes
    sent upstream (the connections after the last cut run to the end): every resume lands
    on the other task."""

    def __init__(self, ports: list[int], cuts: list[int]) -> None:
        self.ports, self.cuts = ports, cuts
        self.connections = 0
        self.port = 0
        self.live: list[asyncio.StreamWriter] = []

    def cut_now(self) -> None:
        """Cut the open connection at once (a link dropping at a chosen message)."""
        for w in self.live:
            w.transport.abort()

    async def start(self) -> asyncio.Server:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        k = self.connections
        self.connections += 1
        limit = self.cuts[k] if k < len(self.cuts) else None
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.ports[k % len(self.ports)])
        self.live = [writer, up_w]

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


def through_alternating(
    fleet: Fleet,
    path: Path,
    stream_id: str,
    cuts: list[int],
    options: dict[str, Any] | None = None,
    cut_at: Callable[[dict[str, Any]], bool] | None = None,
    on_message: Callable[[dict[str, Any]], None] | None = None,
) -> StreamRun:
    """``cut_at``: also cut the connection right after a message it says yes to."""

    async def go() -> StreamRun:
        proxy = Alternating([e.port for e in fleet.entries], cuts)
        listening = await proxy.start()

        def seen(message: dict[str, Any]) -> None:
            if on_message is not None:
                on_message(message)
            if cut_at is not None and cut_at(message):
                proxy.cut_now()

        try:
            return await stream_audio(
                f"ws://127.0.0.1:{proxy.port}/stream",
                FileSource(path),
                {"top_k": 5, "stream_id": stream_id, **(options or {})},
                api_key=fleet.keys["partner"],
                speed=8.0,  # windows answered as the audio goes, so a cut loses few
                frame_ms=250.0,
                on_message=seen,
            )
        finally:
            listening.close()

    return asyncio.run(go())


def test_a_stream_resumed_on_the_other_task_gives_every_window_once(fleet: Fleet) -> None:
    reference = embed(fleet, SOUNDSCAPE)
    # A for ~20 s of audio, B (rebuilt from the token) for ~60 s more, then A again, which
    # holds a copy from before the first cut, now stale: it must rebuild too.
    run = through_alternating(fleet, SOUNDSCAPE, "cross-48k", [2_000_000, 6_000_000])
    assert run.reconnects == 2
    assert [r.rebuilt for r in run.readies] == [False, True, True]
    assert_exactly_once(run, reference)
    assert run.summary is not None and run.summary.resumes == 2
    # What a cross-task resume costs: the audio from the next window's start, sent again.
    for ready in run.readies[1:]:
        assert ready.received_frames <= 48000 * 120


def test_a_resampled_stream_resumed_on_the_other_task_equals_embed(fleet: Fleet) -> None:
    reference = embed(fleet, CLIP)
    run = through_alternating(fleet, CLIP, "cross-16k", [350_000])
    assert [r.rebuilt for r in run.readies] == [False, True]
    # soxr (high) restarted at the resume point differs from the uninterrupted stream by
    # float32 rounding (< 4e-7 per sample); through BirdNET that is up to ~2e-5.
    assert_exactly_once(run, reference, atol=5e-5)


def verified_stream(
    fleet: Fleet, stream_id: str, cut_after: set[int] | None = None
) -> tuple[StreamRun, list[dict[str, Any]]]:
    """A Perch-contract stream of the soundscape with verify=true and index=true; with
    ``cut_after``, the link drops right after each of those windows' result (its
    verification still owed), every resume landing on the other task."""
    messages: list[dict[str, Any]] = []
    cut = set(cut_after or ())

    def cut_at(m: dict[str, Any]) -> bool:
        if m["type"] == "window" and m["index"] in cut:
            cut.discard(m["index"])
            return True
        return False

    options = {"model": PERCH, "verify": True, "index": True, "include_embedding": True}
    if cut_after is None:  # the uninterrupted reference, straight to one task
        url = fleet.entries[0].url.replace("http://", "ws://") + "/stream"
        run = asyncio.run(
            stream_audio(
                url,
                FileSource(SOUNDSCAPE),
                {"top_k": 5, "stream_id": stream_id, **options},
                api_key=fleet.keys["partner"],
                speed=8.0,
                frame_ms=250.0,
                on_message=messages.append,
            )
        )
    else:
        run = through_alternating(
            fleet, SOUNDSCAPE, stream_id, [], options, cut_at, messages.append
        )
    return run, messages


def indexed_starts(fleet: Fleet, run: StreamRun, stream_id: str) -> list[float]:
    """What the shared index holds of the stream: every window of it, each as often as
    it is stored (a search for k beyond the stream's length)."""
    vector = json.dumps(run.windows[min(run.windows)]["embedding"])
    with httpx.Client(headers={"X-API-Key": fleet.keys["partner"]}, timeout=60) as c:
        r = c.post(
            f"{fleet.url}/search",
            data={"embedding": vector, "k": "200", "model": PERCH},
        )
    assert r.status_code == 200, r.text
    neighbours = r.json()["queries"][0]["neighbours"]
    return sorted(n["start_s"] for n in neighbours if n["recording_id"] == stream_id)


def test_a_verify_and_index_stream_resumed_on_the_other_task(fleet: Fleet) -> None:
    """verify=true and index=true across two cross-task resumes, each cut leaving the last
    window's verification owed: every window answered once, every window verified once as
    an uninterrupted stream verifies it, indexed once, and the summary counts the whole
    stream."""
    reference, ref_messages = verified_stream(fleet, "verify-ref")
    run, messages = verified_stream(fleet, "verify-cross", cut_after={3, 12})
    assert run.reconnects == 2
    assert [r.rebuilt for r in run.readies] == [False, True, True]
    assert_exactly_once(run, {w["start_s"]: w for w in reference.windows.values()}, atol=5e-5)

    # Each cut came before the window's verification: the rebuilt task owed it, and asked
    # for audio from before that window (its BirdNET windows reach ~1.5 s further back).
    owed = []
    for i, m in enumerate(messages):
        if m["type"] == "ready" and m.get("rebuilt"):
            before = messages[:i]
            last = max((x for x in before if x["type"] == "window"), key=lambda x: x["index"])
            verified = [x["index"] for x in before if x["type"] == "verification"]
            owed.append(last["index"] not in verified)
            owed_from = last["start_sample"] * 48000 // m["sample_rate"]  # at the file's rate
            assert owed_from - 5 * 48000 <= m["received_frames"] <= owed_from
    assert owed == [True, True]

    def verifications(ms: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
        out: dict[int, list[dict[str, Any]]] = {}
        for m in ms:
            if m["type"] == "verification":
                out.setdefault(m["index"], []).append(m["verification"])
        return out

    want, got = verifications(ref_messages), verifications(messages)
    assert sorted(got) == sorted(want) == sorted(w["index"] for w in run.windows.values())
    assert all(len(v) == 1 for v in got.values())  # exactly once across both drops
    assert run.verification_duplicates == 0 and run.verifications == len(got)
    same = 0
    for i, [w] in want.items():
        [g] = got[i]
        # BirdNET's windows (48 kHz, its own rate) are rebuilt bit for bit.
        assert g["verifier_windows"] == w["verifier_windows"], i
        assert g["verifier_top5"] == w["verifier_top5"], i
        same += (g["agreement"], g.get("reason")) == (w["agreement"], w.get("reason"))
    # Perch-contract's windows are resampled to 32 kHz: restarted soxr differs by float32
    # rounding, which may swap a near-tied class of its random weights.
    assert same >= len(want) - 1

    assert run.summary is not None and reference.summary is not None
    total_bytes = sum(len(f) for f in FileSource(SOUNDSCAPE).frames_from(0, 12000))
    # Counted over all three tasks, the audio sent again after each resume included.
    assert run.summary.windows == reference.summary.windows == len(run.windows)
    assert run.summary.bytes > total_bytes == reference.summary.bytes
    assert run.summary.frames > reference.summary.frames
    assert run.summary.duration_s == reference.summary.duration_s
    assert run.summary.indexed == reference.summary.indexed == len(run.windows)
    assert run.summary.resumes == 2
    ours, theirs = run.summary.verification, reference.summary.verification
    assert ours is not None and theirs is not None
    assert ours.windows == theirs.windows == len(want)
    assert abs(ours.counted - theirs.counted) <= 1

    # Each window in the shared index once, though the task before indexed windows whose
    # results the drop lost and the next task answered them again.
    starts = sorted(w["start_s"] for w in run.windows.values())
    assert indexed_starts(fleet, run, "verify-cross") == starts


# --- refusals ------------------------------------------------------------------------------


async def _open(fleet: Fleet, entry: int, opening: dict[str, Any], key: str) -> tuple[Any, int]:
    url = fleet.entries[entry].url.replace("http://", "ws://") + "/stream"
    headers = {"X-API-Key": fleet.keys[key]}
    ws: AsyncWebSocketSession
    async with (
        httpx.AsyncClient(headers=headers) as client,
        aconnect_ws(url, client) as ws,
    ):
        await ws.send_text(json.dumps({"type": "open", "sample_rate": 48000, **opening}))
        first = json.loads(await ws.receive_text(timeout=30))
        try:
            await ws.receive_text(timeout=30)
        except WebSocketDisconnect as exc:
            return first, exc.code
    return first, 0


def test_resumes_that_must_not_continue_are_refused(fleet: Fleet) -> None:
    async def go() -> dict[str, tuple[Any, int]]:
        url = fleet.entries[0].url.replace("http://", "ws://") + "/stream"
        headers = {"X-API-Key": fleet.keys["partner"]}
        ws: AsyncWebSocketSession
        async with (
            httpx.AsyncClient(headers=headers) as client,
            aconnect_ws(url, client) as ws,
        ):
            await ws.send_text(json.dumps({"type": "open", "sample_rate": 48000, "stream_id": "r"}))
            token = json.loads(await ws.receive_text())["resume_token"]
        state = ResumeState.model_validate_json(
            base64.urlsafe_b64decode(token.split(".")[0] + "==")
        )
        fleet_tokens = ResumeTokens(fleet.secret, 3600)
        other_version = fleet_tokens.sign(
            state.model_copy(update={"model": "birdnet-v2.4:9.9:fp32"})
        )
        forged = ResumeTokens("another fleet", 3600).sign(state)
        ahead = fleet_tokens.sign(state.model_copy(update={"next": 3, "last": 288000}))
        base = {"stream_id": "r"}
        return {
            "forged": await _open(fleet, 1, {**base, "resume_token": forged}, "partner"),
            "other_key": await _open(fleet, 1, {**base, "resume_token": token}, "other"),
            "version": await _open(fleet, 1, {**base, "resume_token": other_version}, "partner"),
            "rate": await _open(
                fleet, 1, {**base, "resume_token": token, "sample_rate": 44100}, "partner"
            ),
            "claims": await _open(
                fleet, 1, {**base, "resume_token": token, "last_window": 144000}, "partner"
            ),
            "gap": await _open(
                fleet, 1, {**base, "resume_token": ahead, "resume_from": 10 * 48000}, "partner"
            ),
            "no_token": await _open(fleet, 1, {**base, "last_window": -1}, "partner"),
        }

    got = asyncio.run(go())
    codes = {name: (body.get("code"), close) for name, (body, close) in got.items()}
    assert codes["forged"] == ("resume_refused", 4409)
    assert got["forged"][0]["details"]["reason"] == "signature"
    assert codes["other_key"] == ("resume_refused", 4409)
    assert codes["version"] == ("resume_refused", 4409)
    assert got["version"][0]["details"]["reason"] == "model_version"
    assert codes["rate"] == ("invalid_request", 4422)
    assert codes["claims"] == ("resume_refused", 4409)
    assert codes["gap"] == ("resume_gap", 4409)
    assert codes["no_token"] == ("stream_not_found", 4404)


# --- a task killed, a task stopped ---------------------------------------------------------


@contextlib.contextmanager
def stuck_reader(fleet: Fleet, entry: int) -> Iterator[None]:
    """A stream on ``entry`` whose client sends 60 s of audio and never reads: its results
    (about 100 KB each, every logit) fill a 4-KiB receive buffer and the server's bounded
    send buffer, so the task's drain waits on it until ``slow_reader_s`` (10 s). That holds
    the drain window open: uvicorn closes idle keep-alive connections only after it."""
    data, rate = sf.read(SOUNDSCAPE, dtype="int16")
    pcm = data.astype("<i2").tobytes()
    conn = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", fleet.entries[entry].port))
        headers = [(b"x-api-key", fleet.keys["partner"].encode())]
        sock.sendall(conn.send(Request(host="127.0.0.1", target="/stream", extra_headers=headers)))
        while not any(isinstance(e, AcceptConnection) for e in conn.events()):
            conn.receive_data(sock.recv(4096))
        opening = {"type": "open", "sample_rate": rate, "include_logits": True}
        sock.sendall(conn.send(TextMessage(data=json.dumps(opening))))
        for at in range(0, 60 * rate * 2, 96_000):
            sock.sendall(conn.send(BytesMessage(data=pcm[at : at + 96_000])))
        yield


def wait_until_draining(client: httpx.Client, url: str, timeout_s: float = 10.0) -> None:
    """Until the task says it is stopping: /readyz turns 503 on SIGTERM (asked on the
    keep-alive connection, as a load balancer's health check)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.get(f"{url}/readyz").status_code == 503:
            return
        time.sleep(0.02)
    raise AssertionError(f"{url} still ready {timeout_s:g} s after SIGTERM")


def test_a_killed_and_a_drained_entry_lose_no_window_and_no_upload(fleet: Fleet) -> None:
    reference = embed(fleet, SOUNDSCAPE)
    runs: list[StreamRun | BaseException] = []
    events: dict[str, float] = {}
    uploads: list[int] = []
    refused: list[tuple[int, str | None, Any]] = []

    async def streams() -> None:
        async def one(i: int) -> StreamRun:
            await asyncio.sleep(0.3 * i)
            return await stream_audio(
                fleet.url.replace("http://", "ws://") + "/stream",
                FileSource(SOUNDSCAPE),
                {"top_k": 5, "stream_id": f"fleet-{i}"},
                api_key=fleet.keys["partner"],
                speed=4.0,
                frame_ms=200.0,
                retries=8,
            )

        runs.extend(await asyncio.gather(*(one(i) for i in range(4)), return_exceptions=True))

    def upload(entry: int) -> None:
        with httpx.Client(headers={"X-API-Key": fleet.keys["partner"]}, timeout=120) as c:
            r = c.post(
                f"{fleet.entries[entry].url}/embed",
                files={"audio": ("s.flac", SOUNDSCAPE.read_bytes(), "audio/flac")},
            )
        uploads.append(r.status_code)

    def chaos() -> None:
        time.sleep(5)
        fleet.kill(0)
        events["killed"] = time.monotonic()
        fleet.restart(0)
        time.sleep(2)
        inflight = [threading.Thread(target=upload, args=(1,)) for _ in range(2)]
        for t in inflight:
            t.start()
        with (
            stuck_reader(fleet, 1),
            httpx.Client(headers={"X-API-Key": fleet.keys["partner"]}, timeout=30) as idle,
        ):
            idle.get(f"{fleet.entries[1].url}/livez")  # a keep-alive connection, as an LB's
            stopping = threading.Thread(
                target=lambda: events.__setitem__("drain_s", fleet.terminate(1))
            )
            stopping.start()
            wait_until_draining(idle, fleet.entries[1].url)
            # Draining now, and the stuck reader holds the drain open for seconds: a new
            # upload on the open connection is refused, deterministically.
            late = idle.post(
                f"{fleet.entries[1].url}/embed",
                files={"audio": ("s.flac", SOUNDSCAPE.read_bytes(), "audio/flac")},
            )
            refused.append((late.status_code, late.headers.get("Retry-After"), late.json()))
            stopping.join()
        for t in inflight:
            t.join()
        fleet.restart(1)

    worker = threading.Thread(target=chaos)
    worker.start()
    asyncio.run(streams())
    worker.join()
    assert uploads == [200, 200]  # in flight when SIGTERM came: finished, not cut
    # A new upload while draining is not taken.
    [(status, retry, body)] = refused
    assert (status, retry, body["error"]["code"]) == (503, "1", "draining")
    assert events["drain_s"] < DRAIN_S + 5
    failed = [r for r in runs if isinstance(r, BaseException)]
    assert not failed, failed
    ok = [r for r in runs if isinstance(r, StreamRun)]
    for run in ok:
        assert_exactly_once(run, reference)
    assert sum(r.reconnects for r in ok) >= 2  # the kill and the drain each moved streams
    assert sum(r.handed_off for r in ok) >= 1  # the drained task said so before closing
    assert any(ready.rebuilt for r in ok for ready in r.readies)
