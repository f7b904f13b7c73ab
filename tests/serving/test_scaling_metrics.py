"""The autoscaling signals (serving/telemetry/scaling.py): the EMF document itself, and
the lines a real server writes to its log while a stream is open and uploads are served."""

from __future__ import annotations

import asyncio
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from httpx_ws import AsyncWebSocketSession, aconnect_ws

from load_tests.server import Service
from sevensense.serving.telemetry import scaling
from sevensense.serving.telemetry.metrics import metrics
from sevensense.settings import ScalingMetricsSettings
from tests.conftest import audio

CLIP = audio("perch_clap_21s_16k.wav")
SOUNDSCAPE = audio("soundscape_birdnet_120s_48k.flac")  # 40 BirdNET windows an upload


def emf_documents(text: str) -> list[dict[str, Any]]:
    """Every log line that is an EMF document (other lines are the service's own logs)."""
    found = []
    for line in text.splitlines():
        if line.startswith('{"_aws"'):
            found.append(json.loads(line))
    return found


def assert_valid_emf(doc: dict[str, Any]) -> dict[str, float]:
    """The spec's rules: each directive names the namespace, dimension sets whose members
    are root keys, and metrics whose values are root numbers. Returns the metrics."""
    meta = doc["_aws"]
    assert isinstance(meta["Timestamp"], int) and meta["Timestamp"] > 1_600_000_000_000
    (directive,) = meta["CloudWatchMetrics"]
    assert directive["Namespace"] == scaling.NAMESPACE
    assert directive["Dimensions"] == [list(scaling.DIMENSIONS)]
    for dim in scaling.DIMENSIONS:
        assert isinstance(doc[dim], str) and doc[dim]
    values = {}
    for m in directive["Metrics"]:
        assert m["Unit"] in ("Count", "Count/Second", "Milliseconds")
        assert isinstance(doc[m["Name"]], int | float)
        values[m["Name"]] = float(doc[m["Name"]])
    return values


def test_emf_line_is_one_valid_document() -> None:
    line = scaling.emf_line(
        "sevensense-prod-entry",
        {scaling.OPEN_STREAMS: 7, scaling.REQUESTS_PER_SECOND: 2.34567},
        1_765_000_000_000,
    )
    assert "\n" not in line
    doc = json.loads(line)
    assert assert_valid_emf(doc) == {"OpenStreams": 7.0, "RequestsPerSecond": 2.346}
    assert doc["ServiceName"] == "sevensense-prod-entry"
    assert doc["_aws"]["Timestamp"] == 1_765_000_000_000


def test_model_sampler_reports_the_mean_wait_since_the_last_line() -> None:
    pending = [5]
    sample = scaling.model_sampler(lambda: pending[0])
    queue = metrics().queue_time.labels("cpu", "m", "1", "cpu")
    for wait_s in (0.010, 0.030):
        queue.observe(wait_s)
    first = sample()
    assert abs(first[scaling.BATCH_QUEUE_WAIT_MS] - 20.0) < 1e-6
    assert first[scaling.PENDING_WINDOWS] == 5.0
    pending[0] = 0
    second = sample()
    assert second[scaling.BATCH_QUEUE_WAIT_MS] == 0.0  # no window since: idle, not stale
    assert second[scaling.PENDING_WINDOWS] == 0.0


def test_publisher_writes_only_when_enabled() -> None:
    out = io.StringIO()
    enabled = ScalingMetricsSettings(enabled=True, interval_s=0.05, service="svc")
    publisher = scaling.Publisher(enabled, lambda: {scaling.INFLIGHT_UPLOADS: 3}, out)
    publisher.start()
    time.sleep(0.3)
    publisher.stop()
    docs = emf_documents(out.getvalue())
    assert len(docs) >= 2
    assert all(assert_valid_emf(d) == {"InflightUploads": 3.0} for d in docs)
    assert scaling.start(ScalingMetricsSettings(), lambda: lambda: {}) is None


async def _hold_stream(server: Service, seconds: float) -> None:
    headers = {"X-API-Key": server.keys["partner"]}
    url = server.url.replace("http://", "ws://") + "/stream"
    ws: AsyncWebSocketSession
    async with httpx.AsyncClient(headers=headers) as client, aconnect_ws(url, client) as ws:
        await ws.send_text(json.dumps({"type": "open", "sample_rate": 16000}))
        ready = json.loads(await ws.receive_text(timeout=30))
        assert ready["type"] == "ready", ready
        await asyncio.sleep(seconds)


def test_real_server_publishes_entry_and_model_signals(server: Service) -> None:
    """The session server runs with the publisher on (1-s period): while a stream is held
    open and an upload is embedded, the log gains EMF lines that show both."""
    start = server.log_path.stat().st_size
    with server.client() as c:
        r = c.post("/embed", files={"audio": (CLIP.name, CLIP.read_bytes(), "audio/wav")})
    assert r.status_code == 200, r.text
    asyncio.run(_hold_stream(server, 2.5))
    with server.log_path.open("rb") as f:
        f.seek(start)
        docs = emf_documents(f.read().decode(errors="replace"))
    entry = [assert_valid_emf(d) for d in docs if "OpenStreams" in d]
    model = [assert_valid_emf(d) for d in docs if "BatchQueueWaitMs" in d]
    assert entry and model, server.log_tail()
    assert {d["ServiceName"] for d in docs} == {"sevensense-test"}
    assert set(entry[0]) == {s.name for s in scaling.ENTRY_SIGNALS}
    assert set(model[0]) == {s.name for s in scaling.MODEL_SIGNALS}
    assert max(e["OpenStreams"] for e in entry) >= 1
    assert max(e["RequestsPerSecond"] for e in entry) > 0
    assert max(m["WindowsPerSecond"] for m in model) > 0
    assert max(m["BatchQueueWaitMs"] for m in model) > 0


def test_a_model_service_publishes_its_pending_windows(server: Service) -> None:
    """PendingWindows is BentoML's batch queue as our code counts it: above 0 in the model
    service's lines while uploads wait for their batches, back to 0 once all are answered
    or refused (nothing leaks)."""
    start = server.log_path.stat().st_size

    def upload(_: int) -> int:
        with server.client() as c:
            r = c.post(
                "/embed",
                files={"audio": (SOUNDSCAPE.name, SOUNDSCAPE.read_bytes(), "audio/flac")},
            )
        return r.status_code

    with ThreadPoolExecutor(4) as pool:
        # More than the model service takes within its batching SLO: BentoML refuses some
        # (the gateway defers those uploads, 202); their windows leave the count too.
        assert set(pool.map(upload, range(4))) <= {200, 202}
    time.sleep(2.5)  # two more periods: the idle lines after the last window
    with server.log_path.open("rb") as f:
        f.seek(start)
        docs = emf_documents(f.read().decode(errors="replace"))
    model = [assert_valid_emf(d) for d in docs if "PendingWindows" in d]
    assert model, server.log_tail()
    assert max(m["PendingWindows"] for m in model) > 0
    assert model[-1]["PendingWindows"] == 0
