"""Message bodies: which kind a message is, and S3 event notifications parsed into records.

S3 puts the object key in its events URL-encoded in the form style (a space arrives as
``+``, a ``+`` as ``%2B``), so keys are decoded with ``unquote_plus``: without it a key with
a space or a non-ASCII letter names an object that does not exist. An event can also reach
the queue wrapped in an SNS notification (fan-out topics); it is unwrapped here.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from sevensense.worker.base import MalformedMessageError

log = logging.getLogger(__name__)

KIND_S3 = "s3_event"
KIND_DEFERRED = "deferred_request"
TEST_EVENT = "s3:TestEvent"


class MalformedEventError(MalformedMessageError):
    code = "malformed_event"


@dataclass(frozen=True)
class S3ObjectEvent:
    bucket: str
    key: str
    event_name: str
    size: int | None = None
    etag: str | None = None
    sequencer: str | None = None
    event_time: str | None = None

    @property
    def created(self) -> bool:
        return "ObjectCreated" in self.event_name

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class S3Notification:
    """Either S3's test event (sent once when notifications are configured) or records."""

    test_event: bool
    bucket: str | None = None
    records: tuple[S3ObjectEvent, ...] = ()


def _load(body: str) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, TypeError) as exc:
        raise MalformedMessageError(f"message body is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise MalformedMessageError(f"message body is JSON {type(doc).__name__}, not an object")
    return doc


def _unwrap_sns(doc: dict[str, Any]) -> dict[str, Any]:
    if doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):
        return _load(doc["Message"])
    return doc


def _is_s3(doc: dict[str, Any]) -> bool:
    return doc.get("Event") == TEST_EVENT or isinstance(doc.get("Records"), list)


def message_kind(body: str) -> str:
    """``kind`` of a JSON body that names one, else ``s3_event`` for S3 notifications."""
    doc = _load(body)
    kind = doc.get("kind")
    if isinstance(kind, str) and kind:
        return kind
    if _is_s3(_unwrap_sns(doc)):
        return KIND_S3
    raise MalformedMessageError(
        "message is neither an S3 event notification nor a body with a 'kind'",
        keys=sorted(doc)[:10],
    )


def _record(raw: Any) -> S3ObjectEvent:
    try:
        s3 = raw["s3"]
        obj = s3["object"]
        size = obj.get("size")
        etag = obj.get("eTag") or obj.get("etag")
        return S3ObjectEvent(
            bucket=str(s3["bucket"]["name"]),
            key=unquote_plus(str(obj["key"])),
            event_name=str(raw.get("eventName", "")),
            size=int(size) if size is not None else None,
            etag=str(etag).strip('"') if etag else None,
            sequencer=obj.get("sequencer"),
            event_time=raw.get("eventTime"),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedEventError(f"S3 event record lacks {exc}: {str(raw)[:200]}") from exc


def parse_notification(body: str) -> S3Notification:
    doc = _unwrap_sns(_load(body))
    if doc.get("Event") == TEST_EVENT:
        return S3Notification(test_event=True, bucket=doc.get("Bucket"))
    records = doc.get("Records")
    if not isinstance(records, list):
        raise MalformedEventError("S3 event notification without a Records list")
    return S3Notification(test_event=False, records=tuple(_record(r) for r in records))
