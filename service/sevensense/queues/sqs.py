"""Amazon SQS behind the :class:`MessageQueue` protocol.

The dead-letter queue and ``max_receives`` come from the queue's own ``RedrivePolicy`` when
the caller does not name them, so the worker's idea of "last attempt" is the one SQS acts
on. Every boto3/botocore failure surfaces as :class:`QueueError`; the caller decides whether
to retry, and never has to know botocore's exception zoo.

Receipts: SQS itself accepts an older receipt for a delete (the message may or may not be
deleted) and rejects an unknown or expired one for a visibility change; a rejection raises
:class:`QueueError` with ``details["stale_receipt"] = True``, as the embedded queue does.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sevensense import aws
from sevensense.errors import QueueError
from sevensense.queues.base import Message, QueueDepth
from sevensense.queues.sqlite import MAX_ATTRIBUTES, MAX_BODY_BYTES, SENT_TIMESTAMP, check_outgoing

log = logging.getLogger(__name__)

MAX_WAIT_S = 20
MAX_BATCH = 10
MAX_REASON_CHARS = 1000
_STALE_CODES = frozenset({"ReceiptHandleIsInvalid", "MessageNotInflight"})


@dataclass(frozen=True)
class RedrivePolicy:
    dead_letter_arn: str
    max_receives: int

    @classmethod
    def parse(cls, text: str) -> RedrivePolicy:
        try:
            raw = json.loads(text)
            return cls(str(raw["deadLetterTargetArn"]), int(raw["maxReceiveCount"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise QueueError(f"unreadable SQS RedrivePolicy {text!r}: {exc}") from exc


def default_client() -> Any:
    """Read timeout above the longest long poll, so a 20-s wait is not cut short."""
    return aws.client("sqs", QueueError, connect_timeout=5, read_timeout=MAX_WAIT_S + 10)


class SqsQueue:
    """One SQS queue; ``default_max_receives`` applies when the queue has no redrive policy
    and ``max_receives`` is not given.

    The DLQ's URL is looked up on first use (``dead_letter``, ``depth``), not here: the
    gateway only sends, and its role may not see the DLQ at all.
    """

    def __init__(
        self,
        url: str,
        *,
        client: Any = None,
        max_receives: int | None = None,
        dlq_url: str | None = None,
        default_max_receives: int = 5,
        visibility_s: int | None = None,
    ) -> None:
        self.url = url
        self.name = url.rstrip("/").rsplit("/", 1)[-1]
        self.client = client if client is not None else default_client()
        self.visibility_s = visibility_s
        self._max_receives = max_receives
        self._default_max_receives = default_max_receives
        self._dlq_url = dlq_url
        self._dead_letter_arn: str | None = None
        self._policy_read = max_receives is not None and dlq_url is not None
        self._lock = threading.Lock()

    def _read_policy(self) -> None:
        """Lazily, so a gateway that only sends starts even while SQS is unreachable."""
        if self._policy_read:
            return
        policy = self.redrive_policy()
        if self._max_receives is None:
            self._max_receives = policy.max_receives if policy else self._default_max_receives
        if self._dlq_url is None and policy is not None:
            self._dead_letter_arn = policy.dead_letter_arn
        self._policy_read = True

    @property
    def max_receives(self) -> int:
        with self._lock:
            self._read_policy()
            assert self._max_receives is not None
            return self._max_receives

    @property
    def dead_letter_arn(self) -> str | None:
        with self._lock:
            self._read_policy()
            return self._dead_letter_arn

    @property
    def dlq_url(self) -> str | None:
        """The dead-letter queue's URL (None without one); QueueError if it cannot be found."""
        arn = self.dead_letter_arn
        with self._lock:
            if self._dlq_url is None and arn is not None:
                self._dlq_url = self._url_for_arn(arn)
            return self._dlq_url

    # --- configuration ----------------------------------------------------------------------

    def redrive_policy(self) -> RedrivePolicy | None:
        with self._call("GetQueueAttributes"):
            attrs = self.client.get_queue_attributes(
                QueueUrl=self.url, AttributeNames=["RedrivePolicy"]
            ).get("Attributes", {})
        text = attrs.get("RedrivePolicy")
        return RedrivePolicy.parse(text) if text else None

    def _url_for_arn(self, arn: str) -> str:
        parts = arn.split(":")
        if len(parts) != 6 or parts[2] != "sqs":
            raise QueueError(f"dead-letter target {arn!r} is not an SQS queue ARN")
        account, name = parts[4], parts[5]
        with self._call("GetQueueUrl"):
            return str(
                self.client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)[
                    "QueueUrl"
                ]
            )

    # --- MessageQueue -----------------------------------------------------------------------

    def send(self, body: str, attributes: dict[str, str] | None = None) -> str:
        attrs = check_outgoing(body, attributes)
        with self._call("SendMessage"):
            response = self.client.send_message(
                QueueUrl=self.url, MessageBody=body, MessageAttributes=_wire(attrs)
            )
        return str(response["MessageId"])

    def send_batch(self, bodies: list[str]) -> list[tuple[int, str, str]]:
        """Up to 10 bodies in one ``SendMessageBatch`` (256 KiB in all); returns the entries
        SQS refused as ``(index, code, reason)``, so the caller reports each one."""
        if not 1 <= len(bodies) <= MAX_BATCH:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH} messages, got {len(bodies)}")
        for body in bodies:
            check_outgoing(body, None)
        if sum(len(b.encode()) for b in bodies) > MAX_BODY_BYTES:
            raise ValueError(f"a batch over {MAX_BODY_BYTES} bytes; send fewer at once")
        entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies)]
        with self._call("SendMessageBatch"):
            response = self.client.send_message_batch(QueueUrl=self.url, Entries=entries)
        return [
            (int(f["Id"]), str(f.get("Code", "unknown")), str(f.get("Message", "")))
            for f in response.get("Failed", [])
        ]

    def receive(
        self, max_messages: int = 1, wait_s: float = 20.0, visibility_s: int | None = None
    ) -> list[Message]:
        """Long polls of at most 20 s each until a message comes or ``wait_s`` (rounded up to
        whole seconds) has passed; at most 10 messages, SQS's limit."""
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        request: dict[str, Any] = {
            "QueueUrl": self.url,
            "MaxNumberOfMessages": min(max_messages, MAX_BATCH),
            "AttributeNames": ["ApproximateReceiveCount", "SentTimestamp"],
            "MessageAttributeNames": ["All"],
        }
        hide_s = self.visibility_s if visibility_s is None else visibility_s
        if hide_s is not None:
            request["VisibilityTimeout"] = hide_s
        deadline = time.monotonic() + max(0.0, wait_s)
        while True:
            left = deadline - time.monotonic()
            request["WaitTimeSeconds"] = min(MAX_WAIT_S, max(0, math.ceil(left)))
            with self._call("ReceiveMessage"):
                raw = self.client.receive_message(**request).get("Messages", [])
            if raw or deadline - time.monotonic() <= 0:
                return [_message(m) for m in raw]

    def delete(self, message: Message) -> None:
        with self._call("DeleteMessage", message):
            self.client.delete_message(QueueUrl=self.url, ReceiptHandle=message.receipt)

    def extend(self, message: Message, visibility_s: int) -> None:
        self._set_visibility(message, visibility_s)

    def release(self, message: Message, delay_s: int = 0) -> None:
        self._set_visibility(message, max(0, delay_s))

    def dead_letter(self, message: Message, code: str, reason: str) -> None:
        """Copy to the dead-letter queue with why, then delete here; a crash in between
        leaves a duplicate in the DLQ rather than losing the message."""
        dlq_url = self.dlq_url
        if dlq_url is None:
            raise QueueError(
                f"SQS queue {self.name} has no dead-letter queue (no RedrivePolicy, no dlq_url)",
                queue=self.name,
            )
        kept = [(k, v) for k, v in message.attributes.items() if k != SENT_TIMESTAMP]
        attrs = dict(kept[:MAX_ATTRIBUTES])
        attrs.update(
            failure_code=code or "unknown",
            failure_reason=(reason or "-")[:MAX_REASON_CHARS],
            source_message_id=message.id,
            receive_count=str(message.receive_count),
        )
        with self._call("SendMessage (dead letter)", message):
            self.client.send_message(
                QueueUrl=dlq_url, MessageBody=message.body, MessageAttributes=_wire(attrs)
            )
        self.delete(message)

    def depth(self) -> QueueDepth:
        """``dead`` is None when there is no DLQ or this role cannot read it."""
        visible, in_flight = self._counts(self.url)
        try:
            dlq = self.dlq_url
            dead = sum(self._counts(dlq)) if dlq else None
        except QueueError as exc:
            log.debug("no dead-letter count for %s: %s", self.name, exc)
            dead = None
        return QueueDepth(visible=visible, in_flight=in_flight, dead=dead)

    # --- helpers ----------------------------------------------------------------------------

    def _set_visibility(self, message: Message, seconds: int) -> None:
        with self._call("ChangeMessageVisibility", message):
            self.client.change_message_visibility(
                QueueUrl=self.url, ReceiptHandle=message.receipt, VisibilityTimeout=seconds
            )

    def _counts(self, url: str) -> tuple[int, int]:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        with self._call("GetQueueAttributes"):
            attrs = self.client.get_queue_attributes(QueueUrl=url, AttributeNames=names)
        values = attrs.get("Attributes", {})
        return int(values.get(names[0], 0)), int(values.get(names[1], 0))

    @contextmanager
    def _call(self, action: str, message: Message | None = None) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "unknown"))
            text = str(error.get("Message", exc))
            details: dict[str, Any] = {"queue": self.name, "aws_code": code}
            if message is not None:
                details["message_id"] = message.id
                details["stale_receipt"] = code in _STALE_CODES or (
                    code == "InvalidParameterValue" and "ReceiptHandle" in text
                )
            raise QueueError(
                f"SQS {action} on {self.name} failed: {code}: {text}", **details
            ) from exc
        except BotoCoreError as exc:
            raise QueueError(f"SQS {action} on {self.name} failed: {exc}", queue=self.name) from exc


def _wire(attrs: dict[str, str]) -> dict[str, dict[str, str]]:
    return {k: {"DataType": "String", "StringValue": v} for k, v in attrs.items()}


def _message(raw: dict[str, Any]) -> Message:
    system = raw.get("Attributes", {})
    attrs = {
        name: str(value["StringValue"])
        for name, value in raw.get("MessageAttributes", {}).items()
        if "StringValue" in value
    }
    if SENT_TIMESTAMP in system:
        attrs[SENT_TIMESTAMP] = str(system[SENT_TIMESTAMP])
    return Message(
        id=str(raw["MessageId"]),
        receipt=str(raw["ReceiptHandle"]),
        body=str(raw.get("Body", "")),
        receive_count=int(system.get("ApproximateReceiveCount", 1)),
        attributes=attrs,
    )
