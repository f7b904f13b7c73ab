"""The embedded queue: SQS semantics, restarts and several processes on one SQLite file."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from sevensense.errors import ConfigError, QueueError
from sevensense.queues import open_batch_queue, open_deferred_queue
from sevensense.queues.sqlite import (
    MAX_RECEIVES_EXCEEDED,
    SENT_TIMESTAMP,
    SqliteQueue,
)
from sevensense.settings import Settings
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "queue.sqlite3"


@pytest.fixture
def queue(db: Path) -> Iterator[SqliteQueue]:
    q = SqliteQueue(db, "deferred", max_receives=3, visibility_s=1, poll_interval_s=0.05)
    yield q
    q.close()


def run_python(code: str, *args: str) -> str:
    """Run ``code`` in a fresh interpreter (a real other process) and return its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_send_receive_delete(queue: SqliteQueue) -> None:
    first = queue.send('{"job": 1}', {"job_id": "j1"})
    second = queue.send('{"job": 2}')

    got = queue.receive(max_messages=10, wait_s=0)

    assert [m.id for m in got] == [first, second]
    assert [m.body for m in got] == ['{"job": 1}', '{"job": 2}']
    assert got[0].attributes["job_id"] == "j1"
    assert abs(int(got[0].attributes[SENT_TIMESTAMP]) / 1000 - time.time()) < 5
    assert [m.receive_count for m in got] == [1, 1]
    assert got[0].receipt != got[1].receipt
    assert queue.depth().in_flight == 2
    assert queue.receive(wait_s=0) == []

    for message in got:
        queue.delete(message)
    assert queue.depth() == type(queue.depth())(visible=0, in_flight=0, dead=0)
    assert queue.receive(wait_s=1.3) == []  # deleted: not back after the visibility timeout


def test_visibility_expiry_redelivers_with_receive_count(queue: SqliteQueue) -> None:
    queue.send("work")
    first = queue.receive(wait_s=0)[0]
    assert queue.receive(wait_s=0) == []

    start = time.monotonic()
    again = queue.receive(wait_s=3)

    assert len(again) == 1
    assert time.monotonic() - start > 0.5
    assert again[0].id == first.id
    assert again[0].receive_count == 2
    assert again[0].receipt != first.receipt


def test_extend_keeps_a_message_hidden(queue: SqliteQueue) -> None:
    queue.send("long job")
    message = queue.receive(wait_s=0)[0]
    queue.extend(message, 2)

    assert queue.receive(wait_s=1.3) == []  # past the original 1-s timeout
    back = queue.receive(wait_s=2)
    assert [m.receive_count for m in back] == [2]


def test_release_now_and_with_delay(queue: SqliteQueue) -> None:
    queue.send("give it back")
    message = queue.receive(wait_s=0, visibility_s=60)[0]

    queue.release(message)
    again = queue.receive(wait_s=0, visibility_s=60)
    assert [m.receive_count for m in again] == [2]

    queue.release(again[0], delay_s=1)
    assert queue.receive(wait_s=0) == []
    start = time.monotonic()
    later = queue.receive(wait_s=3)
    assert [m.receive_count for m in later] == [3]
    assert time.monotonic() - start > 0.5


def test_moved_to_dead_letters_after_max_receives(queue: SqliteQueue) -> None:
    poison = queue.send("poison", {"job_id": "p"})
    counts = [queue.receive(wait_s=0, visibility_s=0)[0].receive_count for _ in range(3)]
    assert counts == [1, 2, 3]
    healthy = queue.send("healthy")

    got = queue.receive(max_messages=5, wait_s=0)

    assert [m.id for m in got] == [healthy]  # the poison message went instead of coming
    (dead,) = queue.dead_letters()
    assert (dead.id, dead.body, dead.code) == (poison, "poison", MAX_RECEIVES_EXCEEDED)
    assert dead.receive_count == 3
    assert dead.attributes == {"job_id": "p"}
    assert "3 times" in dead.reason
    assert queue.depth().dead == 1


def test_dead_letter_with_reason_and_redrive(queue: SqliteQueue) -> None:
    ids = [queue.send(f"m{i}") for i in range(3)]
    messages = queue.receive(max_messages=3, wait_s=0)
    for message in messages:
        queue.dead_letter(message, "undecodable_audio", f"{message.body}: not audio")

    dead = queue.dead_letters()
    assert [d.id for d in dead] == ids
    assert [d.code for d in dead] == ["undecodable_audio"] * 3
    assert dead[1].reason == "m1: not audio"
    assert queue.depth() == type(queue.depth())(visible=0, in_flight=0, dead=3)

    assert queue.redrive_dead([ids[1]]) == 1
    assert [d.id for d in queue.dead_letters()] == [ids[0], ids[2]]
    back = queue.receive(max_messages=10, wait_s=0)
    assert [(m.id, m.receive_count) for m in back] == [(ids[1], 1)]

    assert queue.redrive_dead() == 2
    assert queue.dead_letters() == []
    assert {m.id for m in queue.receive(max_messages=10, wait_s=0)} == {ids[0], ids[2]}


def test_stale_receipt_cannot_delete_extend_or_release(queue: SqliteQueue) -> None:
    queue.send("contended")
    old = queue.receive(wait_s=0, visibility_s=0)[0]
    current = queue.receive(wait_s=0, visibility_s=60)[0]
    assert current.receive_count == 2

    for action in (
        lambda: queue.delete(old),
        lambda: queue.extend(old, 30),
        lambda: queue.release(old),
        lambda: queue.dead_letter(old, "x", "y"),
    ):
        with pytest.raises(QueueError) as info:
            action()
        assert info.value.details["stale_receipt"] is True
    assert queue.depth().in_flight == 1  # nothing the stale holder did took effect

    queue.delete(current)
    queue.delete(current)  # deleting what is gone is a no-op, as in SQS
    with pytest.raises(QueueError, match="no longer in queue"):
        queue.extend(current, 30)
    assert queue.depth().in_flight == 0


def test_queues_in_one_file_are_separate(db: Path, queue: SqliteQueue) -> None:
    other = SqliteQueue(db, "other", visibility_s=1)
    try:
        other.send("for other")
        queue.send("for deferred")
        assert [m.body for m in queue.receive(max_messages=5, wait_s=0)] == ["for deferred"]
        assert [m.body for m in other.receive(max_messages=5, wait_s=0)] == ["for other"]
    finally:
        other.close()


def test_refuses_what_sqs_would_refuse(queue: SqliteQueue) -> None:
    with pytest.raises(ValueError, match="reserved"):
        queue.send("x", {SENT_TIMESTAMP: "1"})
    with pytest.raises(ValueError, match="exceeds"):
        queue.send("x" * (256 * 1024 + 1))
    with pytest.raises(ValueError, match="at most"):
        queue.send("x", {f"a{i}": "v" for i in range(7)})
    queue.close()
    with pytest.raises(QueueError, match="closed"):
        queue.send("x")


def test_long_poll_returns_when_a_message_arrives(queue: SqliteQueue) -> None:
    timer = threading.Timer(0.3, lambda: queue.send("late"))
    timer.start()
    start = time.monotonic()
    got = queue.receive(wait_s=10)
    timer.join()
    assert [m.body for m in got] == ["late"]
    assert time.monotonic() - start < 2


_RECEIVE_ALL = """
import json, sys
from pathlib import Path
from sevensense.queues.sqlite import SqliteQueue
q = SqliteQueue(Path(sys.argv[1]), "deferred", visibility_s=1, poll_interval_s=0.05)
first = q.receive(max_messages=10, wait_s=0)
later = q.receive(max_messages=10, wait_s=4)
for m in first + later:
    q.delete(m)
print(json.dumps({"first": [[m.id, m.receive_count] for m in first],
                  "later": [[m.id, m.receive_count] for m in later]}))
q.close()
"""


def test_survives_a_restart_read_by_a_new_process(db: Path) -> None:
    q = SqliteQueue(db, "deferred", visibility_s=1)
    sent = [q.send(f"job {i}", {"n": str(i)}) for i in range(5)]
    in_flight = {m.id for m in q.receive(max_messages=2, wait_s=0)}
    q.close()

    out = json.loads(run_python(_RECEIVE_ALL, str(db)))

    queued = {mid for mid, _ in out["first"]}
    returned = {mid: count for mid, count in out["later"]}
    assert queued == set(sent) - in_flight  # still there, at once
    assert returned == dict.fromkeys(in_flight, 2)  # back after their visibility timeout
    reopened = SqliteQueue(db, "deferred")
    assert reopened.depth() == type(reopened.depth())(visible=0, in_flight=0, dead=0)
    reopened.close()


_DIE_HOLDING = """
import os, sys
from pathlib import Path
from sevensense.queues.sqlite import SqliteQueue
q = SqliteQueue(Path(sys.argv[1]), "deferred")
got = q.receive(max_messages=1, wait_s=0, visibility_s=1)
print(got[0].id, flush=True)
os._exit(9)  # killed mid-job: no delete, no close
"""


def test_message_held_by_a_dead_process_comes_back(db: Path) -> None:
    q = SqliteQueue(db, "deferred", visibility_s=1, poll_interval_s=0.05)
    held, waiting = q.send("held"), q.send("waiting")
    done = subprocess.run(
        [sys.executable, "-c", _DIE_HOLDING, str(db)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )
    assert done.returncode == 9, done.stderr
    assert done.stdout.strip() == held

    assert [m.id for m in q.receive(max_messages=5, wait_s=0)] == [waiting]
    back = q.receive(wait_s=3)
    assert [(m.id, m.receive_count) for m in back] == [(held, 2)]
    q.close()


_RECEIVER = """
import json, random, sys, time
from pathlib import Path
from sevensense.queues.sqlite import SqliteQueue
q = SqliteQueue(Path(sys.argv[1]), "deferred", visibility_s=120, poll_interval_s=0.02)
print("ready", flush=True)
sys.stdin.readline()  # all start together
seen, idle = [], 0
while idle < 3:
    got = q.receive(max_messages=random.randint(1, 4), wait_s=0.1)
    idle = 0 if got else idle + 1
    for m in got:
        seen.append([m.id, m.receive_count])
        time.sleep(0.002)  # the work
        if random.random() < 0.5:
            q.delete(m)
print(json.dumps(seen))
"""


def test_receivers_in_several_processes_never_share_a_message(db: Path) -> None:
    q = SqliteQueue(db, "deferred", visibility_s=120)
    sent = {q.send(f"job {i}") for i in range(300)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RECEIVER, str(db)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=45)
        assert proc.returncode == 0, err
        results.append(json.loads(out))

    received = Counter(mid for seen in results for mid, _ in seen)
    assert set(received) == sent
    assert max(received.values()) == 1  # hidden for 120 s: nobody got one twice
    assert all(count == 1 for seen in results for _, count in seen)
    assert all(seen for seen in results)  # they really did share the work
    assert q.depth().visible == 0
    q.close()


def test_threads_share_one_queue_object(queue: SqliteQueue) -> None:
    sent = {queue.send(str(i)) for i in range(60)}
    seen: list[str] = []
    lock = threading.Lock()

    def drain() -> None:
        while got := queue.receive(max_messages=3, wait_s=0.1, visibility_s=120):
            with lock:
                seen.extend(m.id for m in got)

    threads = [threading.Thread(target=drain) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == sorted(sent)


def test_open_deferred_queue_embedded_and_config_errors(tmp_path: Path) -> None:
    settings = Settings()
    settings.serving.state_dir = tmp_path
    settings.queue.max_receives = 7
    settings.queue.visibility_timeout_s = 42

    q = open_deferred_queue(settings)

    assert isinstance(q, SqliteQueue)
    assert (q.path, q.name, q.max_receives, q.visibility_s) == (
        tmp_path / "queue.sqlite3",
        "deferred",
        7,
        42,
    )
    q.close()
    assert open_batch_queue(settings) is None
    settings.queue.backend = "sqs"
    with pytest.raises(ConfigError, match="deferred_queue_url"):
        open_deferred_queue(settings)
