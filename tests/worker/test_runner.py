"""The runner in-process on the embedded SQLite queue (same SQS semantics): dispatch by
kind, retries then the dead-letter queue with the reason, heartbeats, limits, shutdown."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from load_tests.server import free_port
from sevensense.errors import CorruptAudioError
from sevensense.queues.base import Message
from sevensense.queues.sqlite import SqliteQueue
from sevensense.worker.base import HandlerResult, Heartbeat
from sevensense.worker.runner import PolledQueue, RunnerOptions, Worker

DEFERRED = json.dumps({"kind": "deferred_request", "job_id": "j1"})


def queue(tmp_path: Path, name: str = "deferred", max_receives: int = 3) -> SqliteQueue:
    return SqliteQueue(tmp_path / "q.sqlite3", name, max_receives=max_receives, visibility_s=30)


def run(q: SqliteQueue, handlers: dict[str, Any], visibility_s: int = 30, **options: Any) -> Worker:
    defaults: dict[str, Any] = {"wait_s": 0, "once": True, "backoff_base_s": 0.0}
    worker = Worker(
        [PolledQueue("deferred", q, visibility_s)],
        handlers,
        RunnerOptions(**{**defaults, **options}),
    )
    worker.run()
    return worker


def sample(worker: Worker, name: str, **labels: str) -> float:
    value = worker.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


def test_dispatch_by_kind_with_a_heartbeat(tmp_path: Path) -> None:
    q = queue(tmp_path)
    q.send(DEFERRED)
    seen: list[tuple[Message, Heartbeat]] = []

    def deferred(message: Message, heartbeat: Heartbeat) -> dict[str, Any]:
        seen.append((message, heartbeat))
        return {"job_id": "j1", "status": "done", "windows": 4, "audio_s": 12.0}

    worker = run(q, {"deferred_request": deferred})
    ((message, heartbeat),) = seen
    assert message.body == DEFERRED and heartbeat.message is message
    assert q.depth().visible == q.depth().in_flight == 0
    labels = {"queue": "deferred", "kind": "deferred_request"}
    assert sample(worker, "sevensense_worker_messages_total", **labels, outcome="done") == 1
    assert sample(worker, "sevensense_worker_windows_total", **labels) == 4
    assert sample(worker, "sevensense_worker_audio_seconds_total", **labels) == 12.0
    assert worker.stats.to_dict()["outcomes"] == {"done": 1}


def test_failures_retry_then_dead_letter_with_the_reason(tmp_path: Path) -> None:
    q = queue(tmp_path, max_receives=3)
    q.send(DEFERRED)
    q.send(json.dumps({"kind": "deferred_request", "job_id": "boom"}))
    q.send("this is not JSON")
    q.send(json.dumps({"kind": "no_such_kind"}))
    calls: list[int] = []

    def deferred(message: Message, heartbeat: Heartbeat) -> HandlerResult:
        calls.append(message.receive_count)
        if "boom" in message.body:
            raise RuntimeError("handler bug")
        raise CorruptAudioError("truncated upload")

    worker = run(q, {"deferred_request": deferred})
    dead = {d.reason: d for d in q.dead_letters()}
    assert len(dead) == 4 and q.depth().visible == q.depth().in_flight == 0
    codes = sorted(d.code for d in dead.values())
    assert codes == ["internal_error", "malformed_message", "undecodable_audio", "unknown_kind"]
    assert dead["truncated upload"].receive_count == 3
    assert dead["RuntimeError: handler bug"].receive_count == 3
    assert sorted(calls) == [1, 1, 2, 2, 3, 3]
    unknown = next(d for d in dead.values() if d.code == "unknown_kind")
    assert unknown.receive_count == 1 and "no_such_kind" in unknown.reason
    assert sample(worker, "sevensense_worker_dead_lettered_total", queue="deferred",
                  code="undecodable_audio") == 1  # fmt: skip
    assert worker.stats.outcomes["retry"] == 4


def test_heartbeat_keeps_a_long_message_hidden(tmp_path: Path) -> None:
    q = queue(tmp_path)
    q.send(DEFERRED)
    peeks: list[int] = []

    def slow(message: Message, heartbeat: Heartbeat) -> None:
        for _ in range(7):  # 3.5 s, well past the 2-s visibility timeout
            time.sleep(0.5)
            heartbeat.progress(heartbeat.audio_s + 1)
            peeks.append(len(q.receive(1, wait_s=0)))

    worker = run(q, {"deferred_request": slow}, visibility_s=2)
    assert peeks == [0] * 7
    assert sample(worker, "sevensense_worker_visibility_extensions_total",
                  queue="deferred", result="ok") >= 2  # fmt: skip
    assert worker.stats.outcomes == {"done": 1}


def test_max_messages_leaves_the_rest(tmp_path: Path) -> None:
    q = queue(tmp_path)
    for _ in range(3):
        q.send(DEFERRED)
    worker = run(q, {"deferred_request": lambda m, h: None}, max_messages=2, concurrency=2)
    assert worker.stats.received == 2
    assert q.depth().visible == 1


@pytest.mark.parametrize("grace_s", [5.0, 0.0])
def test_stop_finishes_or_releases_in_flight(tmp_path: Path, grace_s: float) -> None:
    q = queue(tmp_path)
    q.send(DEFERRED)
    started = threading.Event()

    def slow(message: Message, heartbeat: Heartbeat) -> None:
        started.set()
        for _ in range(20):
            time.sleep(0.05)
            heartbeat.check()

    worker = Worker(
        [PolledQueue("deferred", q, 30)],
        {"deferred_request": slow},
        RunnerOptions(wait_s=1, shutdown_grace_s=grace_s),
    )
    runner = threading.Thread(target=worker.run)
    runner.start()
    assert started.wait(10)
    worker.request_stop()
    runner.join(15)
    assert not runner.is_alive()
    if grace_s:
        assert worker.stats.outcomes == {"done": 1}
        assert q.depth().visible == q.depth().in_flight == 0
    else:
        assert worker.stats.outcomes == {"released": 1}
        assert q.depth().visible == 1  # back at once, not after its 30-s timeout


def test_metrics_endpoint(tmp_path: Path) -> None:
    q = queue(tmp_path)
    q.send(DEFERRED)
    worker = run(q, {"deferred_request": lambda m, h: HandlerResult("done", 3.0, 1)})
    port = free_port()
    worker.metrics.serve(port, addr="127.0.0.1")
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for name in (
        "sevensense_worker_messages_total",
        "sevensense_worker_processing_seconds_bucket",
        "sevensense_worker_audio_seconds_total",
        "sevensense_worker_windows_total",
        "sevensense_worker_realtime_factor_bucket",
        "sevensense_worker_in_flight",
        "sevensense_worker_dead_lettered_total",
        "sevensense_worker_visibility_extensions_total",
    ):
        assert name in text, name


def test_threads_are_shared_out_between_messages() -> None:
    from sevensense.cli.worker import intra_threads_per_message

    assert [intra_threads_per_message(c, cores=2) for c in (1, 2, 3)] == [2, 1, 1]
    assert [intra_threads_per_message(c, cores=16) for c in (1, 2, 4)] == [4, 2, 1]
