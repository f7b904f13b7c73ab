"""SqsQueue with real boto3 against the moto server on 127.0.0.1 (no mocks of boto3)."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from typing import Any

import pytest
from botocore.config import Config

from sevensense.errors import QueueError
from sevensense.queues import open_batch_queue, open_deferred_queue
from sevensense.queues.sqlite import SENT_TIMESTAMP
from sevensense.queues.sqs import MAX_REASON_CHARS, SqsQueue
from sevensense.settings import Settings
from tests.conftest import aws_client

pytestmark = pytest.mark.timeout(60)

MAX_RECEIVES = 2


@pytest.fixture
def sqs(moto_endpoint: str) -> Any:
    return aws_client("sqs", moto_endpoint)


def make_queue(sqs: Any, *, redrive: bool = True, visibility_s: int = 1) -> tuple[str, str]:
    """A fresh (source, DLQ) pair; the source redrives to the DLQ after MAX_RECEIVES."""
    name = f"q-{uuid.uuid4().hex[:10]}"
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    attrs = {"VisibilityTimeout": str(visibility_s)}
    if redrive:
        arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]
        attrs["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": arn["QueueArn"], "maxReceiveCount": MAX_RECEIVES}
        )
    url = sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
    return url, dlq


@pytest.fixture
def urls(sqs: Any) -> tuple[str, str]:
    return make_queue(sqs)


@pytest.fixture
def queue(sqs: Any, urls: tuple[str, str]) -> SqsQueue:
    return SqsQueue(urls[0], client=sqs)


def drain_raw(sqs: Any, url: str) -> list[dict[str, Any]]:
    return list(
        sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            AttributeNames=["All"],
            WaitTimeSeconds=1,
        ).get("Messages", [])
    )


def test_redrive_policy_gives_max_receives_and_the_dlq(
    queue: SqsQueue, urls: tuple[str, str]
) -> None:
    assert queue.max_receives == MAX_RECEIVES
    assert queue.dlq_url == urls[1]
    assert queue.name == urls[0].rsplit("/", 1)[-1]


def test_send_receive_delete(queue: SqsQueue) -> None:
    sent = queue.send('{"job": 1}', {"job_id": "j1"})

    (got,) = queue.receive(max_messages=10, wait_s=1)

    assert (got.id, got.body, got.receive_count) == (sent, '{"job": 1}', 1)
    assert got.attributes["job_id"] == "j1"
    assert abs(int(got.attributes[SENT_TIMESTAMP]) / 1000 - time.time()) < 30
    depth = queue.depth()
    assert (depth.visible, depth.in_flight, depth.dead) == (0, 1, 0)
    queue.delete(got)
    assert queue.receive(wait_s=2) == []  # deleted: not back after its 1-s visibility
    assert queue.depth().in_flight == 0


def test_visibility_expiry_redelivers_with_receive_count(queue: SqsQueue) -> None:
    queue.send("work")
    first = queue.receive(wait_s=1)[0]
    assert queue.receive(wait_s=0) == []

    again = queue.receive(wait_s=3)

    assert [(m.id, m.receive_count) for m in again] == [(first.id, 2)]
    assert again[0].receipt != first.receipt


def test_extend_and_release_with_delay(queue: SqsQueue) -> None:
    queue.send("long job")
    message = queue.receive(wait_s=1)[0]
    queue.extend(message, 3)
    assert queue.receive(wait_s=2) == []  # past the queue's 1-s timeout, still hidden

    queue.release(message, delay_s=1)
    assert queue.receive(wait_s=0) == []
    back = queue.receive(wait_s=3, visibility_s=30)
    assert [m.receive_count for m in back] == [2]

    queue.release(back[0])
    assert queue.depth().visible == 1  # back at once, without waiting out its 30 s


def test_sqs_redrives_to_the_dlq_after_max_receives(
    sqs: Any, queue: SqsQueue, urls: tuple[str, str]
) -> None:
    sent = queue.send("poison", {"job_id": "p"})
    counts = [queue.receive(wait_s=1, visibility_s=0)[0].receive_count for _ in range(2)]
    assert counts == [1, 2]

    assert queue.receive(wait_s=0, visibility_s=0) == []  # moved instead of delivered

    dead = drain_raw(sqs, urls[1])
    assert [m["Body"] for m in dead] == ["poison"]
    assert dead[0]["MessageAttributes"]["job_id"]["StringValue"] == "p"
    assert dead[0]["MessageId"] == sent
    assert queue.depth().dead == 1


def test_dead_letter_records_the_reason(sqs: Any, queue: SqsQueue, urls: tuple[str, str]) -> None:
    sent = queue.send('{"job": "bad"}', {"job_id": "b"})
    message = queue.receive(wait_s=1)[0]

    queue.dead_letter(message, "undecodable_audio", "x" * 5000)

    assert queue.receive(wait_s=2) == []  # gone from the source for good
    (dead,) = drain_raw(sqs, urls[1])
    attrs = {k: v["StringValue"] for k, v in dead["MessageAttributes"].items()}
    assert dead["Body"] == '{"job": "bad"}'
    assert attrs == {
        "job_id": "b",
        "failure_code": "undecodable_audio",
        "failure_reason": "x" * MAX_REASON_CHARS,
        "source_message_id": sent,
        "receive_count": "1",
    }


def test_without_a_redrive_policy_the_defaults_apply(sqs: Any) -> None:
    url, dlq = make_queue(sqs, redrive=False)

    plain = SqsQueue(url, client=sqs, default_max_receives=4)
    assert (plain.max_receives, plain.dlq_url) == (4, None)
    plain.send("x")
    message = plain.receive(wait_s=1)[0]
    with pytest.raises(QueueError, match="no dead-letter queue"):
        plain.dead_letter(message, "c", "r")

    named = SqsQueue(url, client=sqs, max_receives=9, dlq_url=dlq)
    named.dead_letter(message, "c", "r")
    assert [m["Body"] for m in drain_raw(sqs, dlq)] == ["x"]


def test_long_poll_beyond_one_call_returns_when_a_message_arrives(queue: SqsQueue) -> None:
    timer = threading.Timer(1.5, lambda: queue.send("late"))
    timer.start()
    start = time.monotonic()
    got = queue.receive(wait_s=25)
    timer.join()
    assert [m.body for m in got] == ["late"]
    assert time.monotonic() - start < 10


def test_an_unknown_receipt_is_a_stale_receipt_error(queue: SqsQueue) -> None:
    queue.send("x")
    message = queue.receive(wait_s=1)[0]
    forged = type(message)(message.id, "not-a-receipt", message.body, 1)
    with pytest.raises(QueueError) as info:
        queue.extend(forged, 10)
    assert info.value.details["stale_receipt"] is True
    assert info.value.details["aws_code"] == "ReceiptHandleIsInvalid"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_endpoint_is_a_queue_error() -> None:
    import boto3

    endpoint = f"http://127.0.0.1:{closed_port()}"
    client = boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(connect_timeout=0.5, read_timeout=1, retries={"max_attempts": 1}),
    )
    url = f"{endpoint}/123456789012/gone"

    start = time.monotonic()
    lazy = SqsQueue(url, client=client)  # a sender starts while SQS is unreachable
    with pytest.raises(QueueError, match="GetQueueAttributes"):
        _ = lazy.max_receives
    with pytest.raises(QueueError, match="SendMessage"):
        lazy.send("x")
    queue = SqsQueue(url, client=client, max_receives=3, dlq_url=f"{url}-dlq")
    with pytest.raises(QueueError, match="SendMessage"):
        queue.send("x")
    with pytest.raises(QueueError, match="ReceiveMessage"):
        queue.receive(wait_s=0)
    with pytest.raises(QueueError):
        queue.depth()
    assert time.monotonic() - start < 15


def test_open_queues_from_settings(
    sqs: Any, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    deferred_url, deferred_dlq = make_queue(sqs)
    batch_url, _ = make_queue(sqs, redrive=False)
    settings = Settings()
    settings.queue.backend = "sqs"
    settings.queue.deferred_queue_url = deferred_url
    settings.worker.batch_queue_url = batch_url
    settings.worker.max_receives = 6

    deferred = open_deferred_queue(settings)
    batch = open_batch_queue(settings)

    assert isinstance(deferred, SqsQueue) and isinstance(batch, SqsQueue)
    assert (deferred.max_receives, deferred.dlq_url) == (MAX_RECEIVES, deferred_dlq)
    assert (batch.max_receives, batch.dlq_url) == (6, None)  # no redrive policy: settings
    assert batch.visibility_s == settings.worker.visibility_timeout_s
    deferred.send("through the default client")
    assert [m.body for m in deferred.receive(wait_s=1)] == ["through the default client"]


def test_the_dlq_is_looked_up_only_when_needed(sqs: Any) -> None:
    url, dlq = make_queue(sqs)
    sqs.delete_queue(QueueUrl=dlq)  # as good as a role that may not see it

    queue = SqsQueue(url, client=sqs)  # the gateway only sends: no DLQ lookup here

    assert queue.max_receives == MAX_RECEIVES
    queue.send("x")
    assert queue.depth().dead is None
    message = queue.receive(wait_s=1)[0]
    with pytest.raises(QueueError, match="GetQueueUrl"):
        queue.dead_letter(message, "c", "r")
