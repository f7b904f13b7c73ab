"""S3 event notifications and message kinds, as S3, SNS and the gateway send them."""

from __future__ import annotations

import json

import pytest

from sevensense.archive.naming import is_audio_key, output_key
from sevensense.artifacts.manifest import ModelIdentity
from sevensense.worker.base import MalformedMessageError
from sevensense.worker.events import (
    KIND_DEFERRED,
    KIND_S3,
    MalformedEventError,
    message_kind,
    parse_notification,
)


def s3_event(key: str, name: str = "ObjectCreated:Put", **obj: object) -> str:
    record = {
        "eventName": name,
        "eventTime": "2026-01-01T00:00:00.000Z",
        "s3": {
            "bucket": {"name": "in"},
            "object": {"key": key, "size": 12, "eTag": "abc123", "sequencer": "0A1B", **obj},
        },
    }
    return json.dumps({"Records": [record]})


def test_keys_are_url_decoded_as_s3_encodes_them() -> None:
    # What S3 (and moto) put in the event for "incoming/a b+c ü.wav".
    (record,) = parse_notification(s3_event("incoming%2Fa+b%2Bc+%C3%BC.wav")).records
    assert record.key == "incoming/a b+c ü.wav"
    assert (record.bucket, record.size, record.etag, record.sequencer) == (
        "in",
        12,
        "abc123",
        "0A1B",
    )
    assert record.created and record.uri == "s3://in/incoming/a b+c ü.wav"


def test_test_event_sns_wrapping_and_removals() -> None:
    test = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "in"})
    parsed = parse_notification(test)
    assert parsed.test_event and parsed.bucket == "in" and parsed.records == ()
    assert message_kind(test) == KIND_S3
    wrapped = json.dumps({"Type": "Notification", "Message": s3_event("k.wav")})
    assert message_kind(wrapped) == KIND_S3
    assert parse_notification(wrapped).records[0].key == "k.wav"
    (removed,) = parse_notification(s3_event("k.wav", "ObjectRemoved:Delete")).records
    assert not removed.created


def test_kinds_and_malformed_bodies() -> None:
    assert message_kind(json.dumps({"kind": "deferred_request", "job_id": "j"})) == KIND_DEFERRED
    for body in ("not json", "[1, 2]", json.dumps({"hello": "world"})):
        with pytest.raises(MalformedMessageError):
            message_kind(body)
    with pytest.raises(MalformedEventError):
        parse_notification(json.dumps({"Records": [{"s3": {"bucket": {"name": "b"}}}]}))
    with pytest.raises(MalformedEventError):
        parse_notification(json.dumps({"Records": "nope"}))


def test_output_key_scheme() -> None:
    model = ModelIdentity(name="birdnet-v2.4", version="2.4.0", variant="base")
    key = output_key(
        "incoming/site a/2024-05-01.flac",
        "incoming/",
        "embeddings/",
        model,
        '"9b2c0d1e2f3a4b5c6d7e"',
    )
    assert (
        key == "embeddings/site a/2024-05-01.flac.birdnet-v2.4-2.4.0-base.9b2c0d1e2f3a4b5c.parquet"
    )
    outside = output_key("other/x.wav", "incoming/", "out/", model, "abc-2")
    assert outside == "out/other/x.wav.birdnet-v2.4-2.4.0-base.abc-2.parquet"
    assert is_audio_key("a/B.FLAC") and is_audio_key("x.opus") and not is_audio_key("notes.txt")
